/* Random numbers and uuids drawn from a per-thread pool that getrandom(2) refills. */
#include "random.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "clock.h"

/* Random bytes from getrandom(2), drawn 4096 at a time into a per-thread pool: a request needs 56
 * of them (its request id, an event id and a trace context), and one system call per request would
 * cost more than the rest of the work around them. The services never fork, so no two processes share a pool. */
static void
random_bytes(void *out, size_t n)
{
	static _Thread_local unsigned char pool[4096];
	static _Thread_local size_t left;
	unsigned char *p = out;

	while (n > 0) {
		size_t take;

		if (left == 0) {
			size_t got = 0;

			while (got < sizeof(pool)) {
				ssize_t r = getrandom(pool + got, sizeof(pool) - got, 0);

				if (r <= 0) {
					if (r < 0 && errno == EINTR)
						continue;
					break;
				}
				got += (size_t)r;
			}
			if (got < sizeof(pool)) {
				/* getrandom cannot fail this way on Linux >= 3.17; never hand out zeros. */
				uint64_t x = (uint64_t)wall_us() ^ ((uint64_t)getpid() << 32);

				for (size_t i = got; i < sizeof(pool); i++) {
					x = x * 6364136223846793005ULL + 1442695040888963407ULL;
					pool[i] = (unsigned char)(x >> 56);
				}
			}
			left = sizeof(pool);
		}
		take = n < left ? n : left;
		memcpy(p, pool + sizeof(pool) - left, take);
		memset(pool + sizeof(pool) - left, 0, take);
		left -= take;
		p += take;
		n -= take;
	}
}

uint64_t
random_u64(void)
{
	uint64_t v;

	random_bytes(&v, sizeof(v));
	return v;
}

void
uuid_new(char out[37])
{
	uuid_t u;

	/* Version 4 (random), variant RFC 4122, as uuid_generate_random makes; libuuid's own draws
	 * from getrandom and reseeds random() on every call. */
	random_bytes(u, sizeof(u));
	u[6] = (unsigned char)((u[6] & 0x0f) | 0x40);
	u[8] = (unsigned char)((u[8] & 0x3f) | 0x80);
	uuid_unparse_lower(u, out);
}

bool
uuid_valid(const char *s)
{
	uuid_t u;

	return s != NULL && strlen(s) == 36 && uuid_parse(s, u) == 0;
}
