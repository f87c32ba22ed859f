// SPDX-License-Identifier: GPL-2.0
/*
 * A process that makes one namespace for a test, by unshare(2) or clone3(2), and holds it; the C twin
 * of nshelper.py (same arguments, same lines), because the kernel matrix's guests run under QEMU's
 * TCG, where each Python start costs about half a second of emulated CPU and the lifecycle tests
 * start one per namespace. Built by `make setup` into build/nshelper (tests/privileged/scenario.py
 * builds it itself when that is missing or older than this file).
 *
 *   nshelper unshare net    unshare(CLONE_NEWNET), print "<pid> <inum>", wait for stdin EOF
 *   nshelper clone pid      clone3(CLONE_NEWPID); the child prints "child <inum>" and waits, the
 *                           parent prints "parent <its pid> <child's pid>"
 *   nshelper unshare user+net   one call, several types (the first one's inode number is printed)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

static const struct { const char *name; unsigned long flag; const char *file; } TYPES[] = {
	{"net", CLONE_NEWNET, "net"}, {"mnt", CLONE_NEWNS, "mnt"}, {"uts", CLONE_NEWUTS, "uts"},
	{"ipc", CLONE_NEWIPC, "ipc"}, {"pid", CLONE_NEWPID, "pid_for_children"},
	{"user", CLONE_NEWUSER, "user"}, {"cgroup", CLONE_NEWCGROUP, "cgroup"},
	{"time", CLONE_NEWTIME, "time_for_children"},
};

static int lookup(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(TYPES) / sizeof(TYPES[0]); i++)
		if (strlen(TYPES[i].name) == len && !strncmp(TYPES[i].name, name, len))
			return (int)i;
	fprintf(stderr, "nshelper: unknown namespace type %.*s\n", (int)len, name);
	exit(2);
}

static unsigned long long inum(const char *pid, const char *file)
{
	char path[64], link[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%s/ns/%s", pid, file);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0) {
		perror(path);
		exit(1);
	}
	link[n] = 0;
	return strtoull(strchr(link, '[') + 1, NULL, 10);
}

/* Print "<me> <inum>" and wait until the test closes our stdin. */
static void hold(const char *file, const char *me)
{
	char buf[256];

	if (me)
		printf("%s %llu\n", me, inum("self", file));
	else
		printf("%d %llu\n", (int)getpid(), inum("self", file));
	fflush(stdout);
	while (read(0, buf, sizeof(buf)) > 0)
		;
}

int main(int argc, char **argv)
{
	unsigned long flags = 0;
	int first = -1;

	if (argc != 3 || (strcmp(argv[1], "unshare") && strcmp(argv[1], "clone"))) {
		fprintf(stderr, "usage: nshelper unshare|clone TYPE[+TYPE...]\n");
		return 2;
	}
	for (const char *p = argv[2]; *p;) {
		const char *end = strchrnul(p, '+');
		int t = lookup(p, (size_t)(end - p));

		if (first < 0)
			first = t;
		flags |= TYPES[t].flag;
		p = *end ? end + 1 : end;
	}
	if (!strcmp(argv[1], "unshare")) {
		if (unshare((int)flags)) {
			fprintf(stderr, "unshare(%s): %s\n", TYPES[first].name, strerror(errno));
			return 1;
		}
		if (TYPES[first].flag == CLONE_NEWPID) {
			/* pid_for_children can only be opened once the namespace has its init: fork one that
			 * lives exactly as long as we do (it reads a pipe whose writer is only us) */
			int fds[2];
			pid_t init;
			char c;

			if (pipe(fds))
				return 1;
			init = fork();
			if (init == 0) {
				close(fds[1]);
				(void)!read(fds[0], &c, 1);
				_exit(0);
			}
			close(fds[0]);
			hold(TYPES[first].file, NULL);
			close(fds[1]);
			waitpid(init, NULL, 0); /* reap it: a zombie would keep the pid namespace alive */
			return 0;
		}
		hold(TYPES[first].file, NULL);
		return 0;
	}
	{
		struct clone_args args;
		long pid;

		memset(&args, 0, sizeof(args));
		args.flags = flags;
		args.exit_signal = SIGCHLD;
		fflush(stdout);
		pid = syscall(SYS_clone3, &args, sizeof(args));
		if (pid < 0) {
			fprintf(stderr, "clone3(%s): %s\n", TYPES[first].name, strerror(errno));
			return 1;
		}
		if (pid == 0) {
			/* a cloned child in a new pid namespace sees itself as pid 1: the parent reports its pid */
			hold(TYPES[first].name, "child");
			_exit(0);
		}
		printf("parent %d %ld\n", (int)getpid(), pid);
		fflush(stdout);
		waitpid((pid_t)pid, NULL, 0);
	}
	return 0;
}
