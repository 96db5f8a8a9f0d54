/* Reading a small file whole, with a cap, so that a wrong path names a clear error. */
#include "file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
fail(const char *what, const char *path, const char *why, char *err, size_t errlen)
{
	snprintf(err, errlen, "could not read %s%s\"%s\": %s", what ? what : "", what ? " " : "", path,
	    why);
}

char *
file_read(const char *what, const char *path, size_t max, size_t *len, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	size_t n;

	if (f == NULL) {
		fail(what, path, strerror(errno), err, errlen);
		return NULL;
	}
	if ((buf = malloc(max + 1)) == NULL) {
		fail(what, path, "out of memory", err, errlen);
		fclose(f);
		return NULL;
	}
	n = fread(buf, 1, max + 1, f);
	if (ferror(f) || n > max) {
		char why[64];

		if (ferror(f))
			snprintf(why, sizeof(why), "%s", strerror(errno));
		else
			snprintf(why, sizeof(why), "larger than %zu KiB", max / 1024);
		fail(what, path, why, err, errlen);
		fclose(f);
		free(buf);
		return NULL;
	}
	fclose(f);
	buf[n] = '\0';
	*len = n;
	return buf;
}
