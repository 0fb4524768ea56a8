/* N children, 10 ms apart, each makes anonymous memory writable then executable
 * (one WX_MEMORY detection each). */
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 100;
	struct timespec gap = {0, 10 * 1000 * 1000};
	for (int i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid == 0) {
			void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			_exit(mprotect(p, 4096, PROT_READ | PROT_EXEC) ? 1 : 0);
		}
		waitpid(pid, NULL, 0);
		nanosleep(&gap, NULL);
	}
	return 0;
}
