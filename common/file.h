/* Reading a small file whole: a tokens file, a certificate, a migration. */
#ifndef COMMON_FILE_H
#define COMMON_FILE_H

#include <stddef.h>

/* Reads path whole, at most max bytes, into a new NUL-terminated buffer (the caller frees it;
 * *len gets its length). Returns NULL with err filled ("could not read <what> \"path\": why";
 * what may be NULL) when it cannot be opened or read, or is longer than max. */
char *file_read(const char *what, const char *path, size_t max, size_t *len, char *err,
    size_t errlen) __attribute__((warn_unused_result));

#endif
