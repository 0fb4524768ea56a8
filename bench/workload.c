/* Syscall-heavy workload for the sensor benchmark: open/close for write,
 * fork+exec of /bin/true, mmap/mprotect/munmap of anonymous memory (an
 * allocator's guard page: nothing becomes executable), TCP connect on loopback. Prints one line per phase:
 * "<phase> <iterations> <ns per iteration>". */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void report(const char *phase, long n, long long start)
{
	printf("%s %ld %.1f\n", phase, n, (double)(now_ns() - start) / n);
	fflush(stdout);
}

static void open_close(const char *path, long n)
{
	long long t = now_ns();
	for (long i = 0; i < n; i++) {
		int fd = open(path, O_WRONLY | O_CREAT, 0600);
		if (fd < 0) { perror("open"); exit(1); }
		close(fd);
	}
	report("open_close", n, t);
	unlink(path);
}

static void fork_exec(long n)
{
	long long t = now_ns();
	for (long i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid == 0) {
			execl("/bin/true", "true", (char *)NULL);
			_exit(127);
		}
		waitpid(pid, NULL, 0);
	}
	report("fork_exec", n, t);
}

static void mmap_mprotect(long n)
{
	long long t = now_ns();
	for (long i = 0; i < n; i++) {
		char *p = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED || mprotect(p, 4096, PROT_NONE)) { perror("mmap"); exit(1); }
		munmap(p, 65536);
	}
	report("mmap_mprotect", n, t);
}

static void connect_loop(long n)
{
	int srv = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int one = 1;
	setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(srv, (void *)&a, sizeof(a)) || listen(srv, 128) || getsockname(srv, (void *)&a, &len)) {
		perror("server");
		exit(1);
	}
	long long t = now_ns();
	for (long i = 0; i < n; i++) {
		int c = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(c, (void *)&a, sizeof(a))) { perror("connect"); exit(1); }
		int s = accept(srv, NULL, NULL);
		close(c);
		close(s);
	}
	report("connect", n, t);
	close(srv);
}

int main(int argc, char **argv)
{
	long scale = argc > 2 ? atol(argv[2]) : 1;
	open_close(argc > 1 ? argv[1] : "/tmp/ktriage-bench.tmp", 200000 * scale);
	fork_exec(2000 * scale);
	mmap_mprotect(100000 * scale);
	connect_loop(20000 * scale);
	return 0;
}
