/* RFC 3339 formatting of wall-clock microseconds. */
#include "timefmt.h"

#include <stdio.h>
#include <time.h>

void
rfc3339_us(int64_t us, char out[32])
{
	time_t sec = (time_t)(us / 1000000);
	struct tm tm;
	size_t n;

	gmtime_r(&sec, &tm);
	n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, 32 - n, ".%06dZ", (int)(us % 1000000));
}
