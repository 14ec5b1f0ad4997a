/*
 * cli_util.c - the shared scaffolding of the CLI tests (see cli_util.h):
 * per-test temporary directories and the xent binary (XENT_CLI_PATH) run
 * with posix_spawn, stdout and stderr captured in files of the I/O
 * directory.
 */
#define _POSIX_C_SOURCE 200809L

#include "cli_util.h"

#include <criterion/criterion.h>

#include <dirent.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef XENT_CLI_PATH
#error "XENT_CLI_PATH must name the xent binary"
#endif

extern char **environ;

/* ------------------------------------------------------------------------ */
/* Fixture: a data directory and an I/O directory per test                  */
/* ------------------------------------------------------------------------ */

char g_dir[512];
static char g_io[512];
static int g_runs;

static void make_dir(char *buf, size_t len, const char *prefix, const char *tag)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(buf, len, "%s/%s_%s.XXXXXX", tmp && tmp[0] ? tmp : "/tmp", prefix,
             tag);
    cr_assert_not_null(mkdtemp(buf), "mkdtemp failed");
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[1024];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

void cli_fixture_setup(const char *prefix)
{
    make_dir(g_dir, sizeof g_dir, prefix, "data");
    make_dir(g_io, sizeof g_io, prefix, "io");
    g_runs = 0;
}

void cli_fixture_teardown(void)
{
    remove_dir(g_dir);
    remove_dir(g_io);
}

const char *P(const char *name)
{
    static char buf[32][1024];
    static int slot;
    char *b = buf[slot++ % 32];
    snprintf(b, 1024, "%s/%s", g_dir, name);
    return b;
}

/* ------------------------------------------------------------------------ */
/* Running the binary                                                       */
/* ------------------------------------------------------------------------ */

char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (len)
            *len = 0;
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)(n > 0 ? n : 0) + 1);
    size_t got = fread(b, 1, (size_t)(n > 0 ? n : 0), f);
    b[got] = '\0';
    fclose(f);
    if (len)
        *len = got;
    return b;
}

cli_run run_env(const char *env1, const char *const *args)
{
    const char *argv[128];
    int n = 0;
    argv[n++] = XENT_CLI_PATH;
    for (int i = 0; args[i] && n < 126; i++)
        argv[n++] = args[i];
    argv[n] = NULL;

    const char *envp[1024];
    int m = 0;
    for (char **e = environ; *e && m < 1020; e++)
        if (strncmp(*e, "XENT_CHUNK_ROWS=", 16) != 0)
            envp[m++] = *e;
    if (env1)
        envp[m++] = env1;
    envp[m] = NULL;

    char out[1024], err[1024];
    snprintf(out, sizeof out, "%s/out.%d", g_io, g_runs);
    snprintf(err, sizeof err, "%s/err.%d", g_io, g_runs);
    g_runs++;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
    posix_spawn_file_actions_addopen(&fa, 2, err, O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
    pid_t pid;
    int sp = posix_spawn(&pid, XENT_CLI_PATH, &fa, NULL, (char *const *)argv,
                         (char *const *)envp);
    posix_spawn_file_actions_destroy(&fa);
    cr_assert_eq(sp, 0, "cannot run %s", XENT_CLI_PATH);
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cli_run r;
    r.rc = WIFEXITED(status)
               ? WEXITSTATUS(status)
               : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    r.out = slurp(out, NULL);
    r.err = slurp(err, NULL);
    if (!r.out)
        r.out = calloc(1, 1);
    if (!r.err)
        r.err = calloc(1, 1);
    return r;
}

void run_free(cli_run *r)
{
    free(r->out);
    free(r->err);
}

int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}
