/* A minimal unit-test harness: CHECK records a failure and goes on; each binary ends with the
 * line "unit <name>: N passed, N failed" and exits non-zero when anything failed. */
#ifndef TEST_UNIT_H
#define TEST_UNIT_H

#include <stdio.h>
#include <string.h>

static int unit_passed, unit_failed;

#define CHECK(cond)                                                                       \
	do {                                                                                  \
		if (cond) {                                                                       \
			unit_passed++;                                                                \
		} else {                                                                          \
			unit_failed++;                                                                \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);      \
		}                                                                                 \
	} while (0)

#define CHECK_STR(a, b)                                                                   \
	do {                                                                                  \
		const char *unit_a = (a), *unit_b = (b);                                          \
		if (unit_a != NULL && unit_b != NULL && strcmp(unit_a, unit_b) == 0) {            \
			unit_passed++;                                                                \
		} else {                                                                          \
			unit_failed++;                                                                \
			fprintf(stderr, "%s:%d: \"%s\" != \"%s\"\n", __FILE__, __LINE__,              \
			    unit_a ? unit_a : "(null)", unit_b ? unit_b : "(null)");                   \
		}                                                                                 \
	} while (0)

static inline int
unit_report(const char *name)
{
	printf("unit %s: %d passed, %d failed\n", name, unit_passed, unit_failed);
	return unit_failed == 0 ? 0 : 1;
}

#endif
