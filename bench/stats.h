/* Timing and percentile helpers shared by the bench programs (header-only). */
#ifndef BENCH_STATS_H
#define BENCH_STATS_H

#include <time.h>

/* Monotonic wall clock in seconds. */
static inline double
bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* qsort comparator for doubles, ascending. */
static inline int
bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array. */
static inline double
bench_pct(const double *v, long n, double p)
{
	if (n <= 0)
		return 0.0;
	long i = (long)(p / 100.0 * (double)n + 0.999999) - 1;
	if (i < 0)
		i = 0;
	if (i >= n)
		i = n - 1;
	return v[i];
}

#endif
