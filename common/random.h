/* Randomness for identifiers: random numbers and random (v4) uuids, from getrandom(2). */
#ifndef COMMON_RANDOM_H
#define COMMON_RANDOM_H

#include <stdbool.h>
#include <stdint.h>

/* A uniformly random 64-bit number; safe from any thread. */
uint64_t random_u64(void);

/* Writes a new random (v4) uuid in lowercase text form. */
void uuid_new(char out[37]);
bool uuid_valid(const char *s);

#endif
