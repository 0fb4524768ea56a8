/* N children, 10 ms apart, each copies /bin/true into a memfd and executes it
 * (one FILELESS_EXECUTION detection each, completed by the exec record). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 100;
	struct timespec gap = {0, 10 * 1000 * 1000};
	int src = open("/bin/true", O_RDONLY);
	struct stat st;
	if (src < 0 || fstat(src, &st))
		return 1;
	for (int i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid == 0) {
			int fd = memfd_create("payload", 0);
			off_t off = 0;
			if (fd < 0 || sendfile(fd, src, &off, st.st_size) != st.st_size)
				_exit(1);
			char *args[] = {"payload", NULL};
			fexecve(fd, args, environ);
			_exit(127);
		}
		waitpid(pid, NULL, 0);
		nanosleep(&gap, NULL);
	}
	return 0;
}
