/* Exec storm: fork+exec /bin/true RATE times per second for SECONDS seconds,
 * paced on absolute deadlines; children are reaped by the kernel (SIGCHLD ignored).
 * Prints the executions started. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	double rate = argc > 1 ? atof(argv[1]) : 100;
	double seconds = argc > 2 ? atof(argv[2]) : 30;
	long total = (long)(rate * seconds);
	struct timespec next;
	signal(SIGCHLD, SIG_IGN);
	clock_gettime(CLOCK_MONOTONIC, &next);
	long step = (long)(1e9 / rate);
	for (long i = 0; i < total; i++) {
		if (fork() == 0) {
			execl("/bin/true", "true", (char *)NULL);
			_exit(127);
		}
		next.tv_nsec += step;
		while (next.tv_nsec >= 1000000000L) {
			next.tv_nsec -= 1000000000L;
			next.tv_sec++;
		}
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
	}
	printf("%ld\n", total);
	return 0;
}
