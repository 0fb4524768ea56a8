/* Paced event source: open(O_WRONLY) a file RATE times per second for SECONDS
 * seconds (batches of 100 on absolute deadlines). Prints the opens done. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *path = argv[1];
	double rate = atof(argv[2]), seconds = atof(argv[3]);
	long total = (long)(rate * seconds), batch = 100;
	long step = (long)(1e9 * batch / rate);
	struct timespec next;
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (long i = 0; i < total; i += batch) {
		for (long j = 0; j < batch; j++)
			close(open(path, O_WRONLY | O_CREAT, 0600));
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
