/*
 * threads.c — how many OpenMP threads alloy's work uses (alloy/base.h): the cores free now.
 *
 * /proc/loadavg's fourth field is "running/total": the tasks running or ready to run at the
 * moment it is read, this one included. Other work holding k of the CPUs leaves cpus - k for
 * alloy; a process that happens to be running during one reading (a shell, make) is filtered
 * out by taking the least of a few readings a millisecond apart.
 */
#include "alloy/base.h"

#include <sched.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define READINGS 5

/* The running tasks, this one included; -1 when /proc/loadavg is not readable. */
static int running_now(void) {
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f) return -1;
    double a, b, c;
    int running = -1, total = 0;
    if (fscanf(f, "%lf %lf %lf %d/%d", &a, &b, &c, &running, &total) != 5) running = -1;
    fclose(f);
    return running;
}

int alloy_cores_free(int *cores) {
    int n = 1;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
    if (n < 1) n = 1;
    if (cores) *cores = n;
    int least = -1;
    for (int i = 0; i < READINGS; i++) {
        int r = running_now();
        if (r < 0) return n; // no /proc: assume the machine is ours
        if (least < 0 || r < least) least = r;
        if (least <= 1) break;
        if (i + 1 < READINGS) nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    // this thread is one of the running tasks; the others fill the CPUs this process may not
    // use first (a container or taskset given part of a larger machine)
    int others = least - 1;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (online > n) others -= (int)(online - n);
    int free_cores = n - (others > 0 ? others : 0);
    return free_cores < 1 ? 1 : free_cores;
}

int alloy_threads_use(int n) {
#ifdef _OPENMP
    const char *env = getenv("OMP_NUM_THREADS"); // the user's choice stands
    if (n <= 0 && env && atoi(env) > 0) n = atoi(env);
    if (n <= 0) n = alloy_cores_free(NULL);
    omp_set_num_threads(n);
    return n;
#else
    (void)n;
    return 1;
#endif
}
