/* Connecting to NATS the way every process here must: who we are (a user and password, a creds
 * file or an nkey), over TLS when asked, retrying at start and reconnecting forever. */
#ifndef COMMON_NATSCONN_H
#define COMMON_NATSCONN_H

#include <nats/nats.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/* user-api publishes an empty core-NATS message here after each commit to wake the relay;
 * losing one is harmless because the relay also polls. */
#define OUTBOX_NUDGE_SUBJECT "outbox.nudge"

/* Where NATS is and how to prove who we are. At most one way of authenticating: NATS_USER with
 * its password (from NATS_PASSWORD_FILE or NATS_PASSWORD), NATS_CREDS_FILE, NATS_NKEY_SEED_FILE,
 * or a user and password inside NATS_URL; natsconn_settings_check() refuses a mix. */
struct nats_settings {
	const char *url;		/* one URL or a comma-separated list (a cluster) */
	const char *user;
	const char *password;		/* NATS_PASSWORD: visible in the process environment */
	const char *password_file;	/* its first line is the password */
	const char *creds_file;		/* JWT and seed of a user of an operator-mode server */
	const char *nkey_seed_file;	/* "SU..." seed; its public key is derived from it */
	bool tls;			/* require TLS (also implied by the TLS files or a tls:// URL) */
	const char *tls_ca;		/* PEM file of the CAs to trust (default: the system's) */
	const char *tls_cert;		/* client certificate chain, for servers that verify clients */
	const char *tls_key;
};

/* Entries to splice into a service's settings table; url_help says what the service uses NATS
 * for, url_empty_ok whether an empty NATS_URL means "no NATS" (said in url_help) rather than an
 * error. Names holding PASSWORD are masked by --check. */
#define NATS_SETTINGS_ENTRIES(s, url_help, url_empty_ok)                                           \
	{ "NATS_URL", (url_empty_ok) ? CONFIG_STRING_OR_EMPTY : CONFIG_STRING, &(s).url,             \
	    "nats://localhost:4222", 0, 0, url_help },                                               \
	{ "NATS_USER", CONFIG_STRING, &(s).user, NULL, 0, 0,                                         \
	    "NATS user, with NATS_PASSWORD_FILE or NATS_PASSWORD" },                                \
	{ "NATS_PASSWORD_FILE", CONFIG_STRING, &(s).password_file, NULL, 0, 0,                       \
	    "file whose first line is NATS_USER's password" },                                      \
	{ "NATS_PASSWORD", CONFIG_STRING, &(s).password, NULL, 0, 0,                                 \
	    "NATS_USER's password (NATS_PASSWORD_FILE keeps it out of the environment)" },          \
	{ "NATS_CREDS_FILE", CONFIG_STRING, &(s).creds_file, NULL, 0, 0,                             \
	    "JWT credentials file (.creds) of a NATS user, instead of NATS_USER" },                  \
	{ "NATS_NKEY_SEED_FILE", CONFIG_STRING, &(s).nkey_seed_file, NULL, 0, 0,                     \
	    "file holding the nkey seed (SU...) of a NATS user, instead of NATS_USER" },             \
	{ "NATS_TLS", CONFIG_BOOL, &(s).tls, "false", 0, 0,                                          \
	    "require TLS to NATS (implied by NATS_TLS_CA, NATS_TLS_CERT or a tls:// URL)" },         \
	{ "NATS_TLS_CA", CONFIG_STRING, &(s).tls_ca, NULL, 0, 0,                                     \
	    "PEM file of the CAs that NATS's certificate must chain to (empty: the system's)" },   \
	{ "NATS_TLS_CERT", CONFIG_STRING, &(s).tls_cert, NULL, 0, 0,                                 \
	    "PEM client certificate for a NATS server that verifies clients, with NATS_TLS_KEY" },   \
	{ "NATS_TLS_KEY", CONFIG_STRING, &(s).tls_key, NULL, 0, 0,                                   \
	    "PEM private key of NATS_TLS_CERT" }

/* Checks the settings against each other and that the files they name can be read: two ways of
 * authenticating at once, a password without a user, a certificate without its key. Returns 0,
 * or -1 with err naming the settings (never a password). */
int natsconn_settings_check(const struct nats_settings *s, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Connects. A server that cannot be reached yet is no error: the library keeps trying in the
 * background and reconnects forever after a loss; the connection is usable once natsconn_ok()
 * says so. Returns NULL with err filled for what retrying cannot mend: a bad URL, an unreadable
 * password, seed or certificate file, a server that refused the credentials or whose
 * certificate did not verify. A server that later refuses the credentials on a reconnect ends the
 * process (fatal), as a retry with the same credentials cannot succeed. name is shown to the
 * server (connz). err and log lines show the URL with its password masked. The caller
 * natsConnection_Destroy()s the result. With send_asap, a publish writes to the socket on the
 * caller's thread (for rare, lone messages: no wake-up of nats.c's flusher thread); without it,
 * the flusher thread gathers publishes into fewer writes. */
natsConnection *natsconn_open(const struct nats_settings *s, const char *name, bool send_asap,
    char *err, size_t errlen);
bool natsconn_ok(natsConnection *nc);

/* nats_Close(), the last call to the library, except in a process that used TLS to NATS: there
 * libnats 3.4's cleanup frees OpenSSL's list of compression methods and leaves OpenSSL pointing
 * at it, and OpenSSL's own cleanup at exit frees it again and crashes the process
 * (nats-io/nats.c#904, fixed after 3.4). The library is then left to the exit: its memory stays
 * reachable, and it has nothing to flush once every connection is destroyed. */
void natsconn_library_close(void);

/* The public key ("U...", 56 characters and a NUL) of an nkey user seed ("SU...", 58 characters),
 * which nats.c needs next to the seed file. Returns 0, or -1 when seed is not a user seed. */
int natsconn_nkey_public(const char *seed, char *pub, size_t publen)
    __attribute__((warn_unused_result));

#endif
