/*
 * gpu_main.c - the main of the CUDA test binaries (test_gpu, test_gpu_info):
 * link it in place of Criterion's own main.
 *
 * Without a CUDA device the binary prints one line,
 *   "<name>: no CUDA device, skipping N tests"
 * (<name> is the basename of argv[0]; tools/run-tests.sh counts these as
 * skipped) and exits 77 (ctest's SKIP_RETURN_CODE), unless
 * XENT_REQUIRE_GPU=1, which makes that a failure (exit 1). The device
 * check runs in a child process, so this process never initializes CUDA
 * before Criterion starts its test workers.
 */
#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* Asks for the device count in a child process (so this process does not
 * initialize CUDA before Criterion starts its workers); returns the count,
 * with the reason for none in why. */
static int device_count(char *why, size_t why_size)
{
    int fd[2];
    snprintf(why, why_size, "unknown");
    if (pipe(fd) != 0) {
        snprintf(why, why_size, "pipe failed");
        return 0;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        snprintf(why, why_size, "fork failed");
        return 0;
    }
    if (pid == 0) {
        close(fd[0]);
        int count = 0;
        cudaError_t e = cudaGetDeviceCount(&count);
        char msg[256];
        int len = snprintf(
            msg, sizeof msg, "%d %s", e == cudaSuccess ? count : 0,
            e == cudaSuccess ? "no device found" : cudaGetErrorString(e));
        ssize_t wr = write(fd[1], msg, (size_t)len);
        (void)wr;
        close(fd[1]);
        _exit(0);
    }
    close(fd[1]);
    char buf[256];
    ssize_t got = 0, k;
    while (got < (ssize_t)sizeof buf - 1 &&
           (k = read(fd[0], buf + got, sizeof buf - 1 - (size_t)got)) > 0)
        got += k;
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    buf[got > 0 ? got : 0] = '\0';
    int count = 0, off = 0;
    if (sscanf(buf, "%d %n", &count, &off) < 1) {
        snprintf(why, why_size, "the device query crashed");
        return 0;
    }
    snprintf(why, why_size, "%s", buf + off);
    return count;
}

/* The binary's name for the messages: argv[0] without its directory. */
static const char *program_name(int argc, char *argv[])
{
    if (argc < 1 || !argv[0] || !argv[0][0])
        return "test";
    const char *slash = strrchr(argv[0], '/');
    return slash && slash[1] ? slash + 1 : argv[0];
}

int main(int argc, char *argv[])
{
    const char *name = program_name(argc, argv);
    char why[256];
    struct criterion_test_set *tests = criterion_initialize();
    if (device_count(why, sizeof why) < 1) {
        const char *req = getenv("XENT_REQUIRE_GPU");
        size_t n_tests = tests->tests;
        criterion_finalize(tests);
        if (req && strcmp(req, "1") == 0) {
            printf("%s: no CUDA device (%s) but XENT_REQUIRE_GPU=1\n", name,
                   why);
            return 1;
        }
        /* tools/run-tests.sh counts these as skipped */
        printf("%s: no CUDA device, skipping %zu tests\n", name, n_tests);
        return 77;
    }
    int result = 0;
    if (criterion_handle_args(argc, argv, true))
        result = !criterion_run_all_tests(tests);
    criterion_finalize(tests);
    return result;
}
