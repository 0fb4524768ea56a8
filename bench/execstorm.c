/* Exec storm: fork+exec /bin/true RATE times per second for SECONDS seconds,
 * paced on absolute deadlines; children are reaped as they end, so their CPU
 * time is counted. Prints the executions started and the CPU seconds (user+sys)
 * of this process and its children: sensors that work in the context of the
 * traced process (BPF programs, audit's syscall-exit records) show up there. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double seconds_of(struct timeval t)
{
	return t.tv_sec + t.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
	double rate = argc > 1 ? atof(argv[1]) : 100;
	double seconds = argc > 2 ? atof(argv[2]) : 30;
	long total = (long)(rate * seconds);
	struct timespec next;
	struct rusage self, children;
	clock_gettime(CLOCK_MONOTONIC, &next);
	long step = (long)(1e9 / rate);
	for (long i = 0; i < total; i++) {
		if (fork() == 0) {
			execl("/bin/true", "true", (char *)NULL);
			_exit(127);
		}
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		next.tv_nsec += step;
		while (next.tv_nsec >= 1000000000L) {
			next.tv_nsec -= 1000000000L;
			next.tv_sec++;
		}
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
	}
	while (wait(NULL) > 0)
		;
	getrusage(RUSAGE_SELF, &self);
	getrusage(RUSAGE_CHILDREN, &children);
	printf("%ld %.6f\n", total, seconds_of(self.ru_utime) + seconds_of(self.ru_stime) +
					 seconds_of(children.ru_utime) + seconds_of(children.ru_stime));
	return 0;
}
