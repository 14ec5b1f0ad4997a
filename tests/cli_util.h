/*
 * cli_util.h - running the `xent` binary from a Criterion test (test_cli,
 * test_cli_info): a data directory and an I/O directory per test, paths in
 * the data directory, and the binary spawned with stdout and stderr
 * captured.
 *
 * cli_util.c is compiled into each CLI test binary, whose target defines
 * XENT_CLI_PATH (the xent binary to run).
 */
#ifndef XENT_TESTS_CLI_UTIL_H
#define XENT_TESTS_CLI_UTIL_H

#include <stddef.h>

/* The current test's data directory (inputs and outputs). */
extern char g_dir[512];

/* Makes fresh directories $TMPDIR/<prefix>_data.XXXXXX (g_dir) and
 * $TMPDIR/<prefix>_io.XXXXXX (captured output; TMPDIR defaults to /tmp),
 * and restarts the run count; for a TestSuite's .init. */
void cli_fixture_setup(const char *prefix);

/* Removes both directories and the files in them; for a TestSuite's .fini. */
void cli_fixture_teardown(void);

/* g_dir/name in one of 32 rotating buffers. */
const char *P(const char *name);

/* A file's contents, NUL-terminated (malloc'd), its length in *len when
 * len is not NULL; NULL (and *len = 0) when it cannot be opened. */
char *slurp(const char *path, size_t *len);

typedef struct cli_run {
    int rc;          /* exit status, or 128 + the signal */
    char *out, *err; /* stdout and stderr (malloc'd, never NULL) */
} cli_run;

/* Runs xent with args (NULL-terminated, without the program name) and the
 * environment without XENT_CHUNK_ROWS, plus `env1` when given. */
cli_run run_env(const char *env1, const char *const *args);

#define CLI(...)          run_env(NULL, (const char *[]){__VA_ARGS__, NULL})
#define CLI_ENV(env, ...) run_env(env, (const char *[]){__VA_ARGS__, NULL})

/* Frees a run's captured output. */
void run_free(cli_run *r);

/* The number of '\n' in s. */
int count_lines(const char *s);

#endif
