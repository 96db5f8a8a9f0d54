/* One way to NATS for every process: credentials and TLS from the settings, a first attempt that
 * tells a wrong password or certificate from a server that is not up yet, and reconnects forever
 * (nats.c gives up after 60 attempts by default). */
#include "natsconn.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* The URL as it may be shown: with the password of its user information masked. */
static void
url_shown(const char *url, char *out, size_t outlen)
{
	config_url_redact(url, out, outlen);
}

static void
on_disconnected(natsConnection *nc, void *closure)
{
	char shown[512];

	url_shown(closure, shown, sizeof(shown));
	/* Closing our own connection at shutdown disconnects it too: that is no news. */
	if (natsConnection_IsClosed(nc))
		log_debug("nats: connection to %s closed", shown);
	else
		log_warnx("nats: disconnected from %s, reconnecting", shown);
}

static void
on_reconnected(natsConnection *nc, void *closure)
{
	char shown[512];

	(void)nc;
	url_shown(closure, shown, sizeof(shown));
	log_info("nats: reconnected to %s", shown);
}

static void
on_connected(natsConnection *nc, void *closure)
{
	char shown[512];

	(void)nc;
	url_shown(closure, shown, sizeof(shown));
	log_info("nats: connected to %s", shown);
}

/* nats.c closes the connection for good when a server refuses the credentials twice in a row
 * (on a reconnect, or on the first connect when the server was not up at start). Nothing in this
 * process can mend that, and staying up would only look alive: stop, and say why. Our own close
 * at shutdown leaves no such error. */
static void
on_closed(natsConnection *nc, void *closure)
{
	const char *text = NULL;
	char shown[512];

	if (natsConnection_GetLastError(nc, &text) != NATS_CONNECTION_AUTH_FAILED)
		return;
	url_shown(closure, shown, sizeof(shown));
	fatal("nats: %s refused the credentials: %s (check NATS_USER and its password, "
	    "NATS_CREDS_FILE or NATS_NKEY_SEED_FILE)", shown, text != NULL ? text : "");
}

/* Errors the server reports on a live connection: mostly a publish or subscription that the
 * user's permissions do not allow, which the library would otherwise drop in silence. At most
 * one line a second, so a loop of refused publishes cannot flood the log. */
static void
on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
	static _Atomic int64_t last_ms;
	static _Atomic long skipped;
	const char *text = NULL;
	struct timespec ts;
	int64_t now;
	long more;

	(void)sub;
	(void)closure;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	if (last_ms != 0 && now - last_ms < 1000) {
		skipped++;
		return;
	}
	last_ms = now;
	more = skipped;
	skipped = 0;
	if (natsConnection_GetLastError(nc, &text) == NATS_OK || text == NULL || *text == '\0')
		text = natsStatus_GetText(err);
	if (more > 0)
		log_warnx("nats: %s (and %ld more errors in the last second)", text, more);
	else
		log_warnx("nats: %s", text);
}

/* natsOptions_SetURL takes one URL; a comma-separated list (a cluster) goes to SetServers. */
static natsStatus
set_urls(natsOptions *opts, const char *url)
{
	const char *servers[16];
	char *copy, *save = NULL, *tok;
	int n = 0;
	natsStatus s;

	if (strchr(url, ',') == NULL)
		return natsOptions_SetURL(opts, url);
	if ((copy = strdup(url)) == NULL)
		return NATS_NO_MEMORY;
	for (tok = strtok_r(copy, ",", &save); tok != NULL && n < 16; tok = strtok_r(NULL, ",", &save))
		if (*tok != '\0')
			servers[n++] = tok;
	s = n > 0 ? natsOptions_SetServers(opts, servers, n) : NATS_INVALID_ARG;
	free(copy);
	return s;
}

static bool
set(const char *v)
{
	return v != NULL && *v != '\0';
}

/* A user or a token inside the URL (scheme://user:password@host), in any of a list's URLs. */
static bool
url_has_credentials(const char *url)
{
	return url != NULL && strchr(url, '@') != NULL;
}

int
natsconn_settings_check(const struct nats_settings *s, char *err, size_t errlen)
{
	const char *ways[4];
	int n = 0;
	const struct {
		const char *name, *path;
	} files[] = {
		{ "NATS_PASSWORD_FILE", s->password_file }, { "NATS_CREDS_FILE", s->creds_file },
		{ "NATS_NKEY_SEED_FILE", s->nkey_seed_file }, { "NATS_TLS_CA", s->tls_ca },
		{ "NATS_TLS_CERT", s->tls_cert }, { "NATS_TLS_KEY", s->tls_key },
	};

	if (url_has_credentials(s->url))
		ways[n++] = "credentials inside NATS_URL";
	if (set(s->user) || set(s->password) || set(s->password_file))
		ways[n++] = set(s->user) ? "NATS_USER" : set(s->password) ? "NATS_PASSWORD" :
		    "NATS_PASSWORD_FILE";
	if (set(s->creds_file))
		ways[n++] = "NATS_CREDS_FILE";
	if (set(s->nkey_seed_file))
		ways[n++] = "NATS_NKEY_SEED_FILE";
	if (n > 1) {
		snprintf(err, errlen, "%s and %s are both set: give NATS one way to authenticate", ways[0],
		    ways[1]);
		return -1;
	}
	if (set(s->password) && set(s->password_file)) {
		snprintf(err, errlen, "NATS_PASSWORD and NATS_PASSWORD_FILE are both set: give the "
		    "password one way");
		return -1;
	}
	if (!set(s->user) && (set(s->password) || set(s->password_file))) {
		snprintf(err, errlen, "%s is set without NATS_USER",
		    set(s->password) ? "NATS_PASSWORD" : "NATS_PASSWORD_FILE");
		return -1;
	}
	if (set(s->user) && !set(s->password) && !set(s->password_file)) {
		snprintf(err, errlen, "NATS_USER is set without NATS_PASSWORD_FILE or NATS_PASSWORD");
		return -1;
	}
	if (set(s->tls_cert) != set(s->tls_key)) {
		snprintf(err, errlen, "%s is set without %s", set(s->tls_cert) ? "NATS_TLS_CERT" :
		    "NATS_TLS_KEY", set(s->tls_cert) ? "NATS_TLS_KEY" : "NATS_TLS_CERT");
		return -1;
	}
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		if (set(files[i].path) && access(files[i].path, R_OK) != 0) {
			snprintf(err, errlen, "cannot read %s \"%s\": %s", files[i].name, files[i].path,
			    strerror(errno));
			return -1;
		}
	return 0;
}

/* Reads the first line of path into out, without its line end; a secret, so the caller
 * explicit_bzero()es out. Returns 0, or -1 with err naming setting and path. */
static int
read_secret_line(const char *setting, const char *path, char *out, size_t outlen, char *err,
    size_t errlen)
{
	FILE *f = fopen(path, "r");
	size_t len;

	if (f == NULL) {
		snprintf(err, errlen, "cannot read %s \"%s\": %s", setting, path, strerror(errno));
		return -1;
	}
	if (fgets(out, (int)outlen, f) == NULL)
		out[0] = '\0';
	fclose(f);
	len = strcspn(out, "\r\n");
	if (out[len] == '\0' && len == outlen - 1) {
		explicit_bzero(out, outlen);
		snprintf(err, errlen, "%s \"%s\": its first line is longer than %zu bytes", setting, path,
		    outlen - 2);
		return -1;
	}
	out[len] = '\0';
	if (len == 0) {
		snprintf(err, errlen, "%s \"%s\" is empty", setting, path);
		return -1;
	}
	return 0;
}

/* The nkey encoding: base32 (RFC 4648, no padding) of a prefix, the key and a CRC-16/XMODEM of
 * both, little-endian. A user's public key has prefix byte 'U' (20 << 3), its seed the two bytes
 * 'S' (18 << 3) and 'U' spread over 5 + 3 bits. */
#define NKEY_PREFIX_SEED (18 << 3)
#define NKEY_PREFIX_USER (20 << 3)

static uint16_t
crc16(const unsigned char *p, size_t n)
{
	uint16_t crc = 0;

	for (size_t i = 0; i < n; i++) {
		crc ^= (uint16_t)(p[i] << 8);
		for (int b = 0; b < 8; b++)
			crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
	}
	return crc;
}

static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/* Decodes up to outlen bytes; returns how many, or -1 on a character outside the alphabet. */
static int
b32_decode(const char *in, size_t inlen, unsigned char *out, size_t outlen)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t n = 0;

	for (size_t i = 0; i < inlen; i++) {
		const char *c = strchr(b32, in[i]);

		if (in[i] == '\0' || c == NULL)
			return -1;
		acc = (acc << 5) | (uint32_t)(c - b32);
		bits += 5;
		if (bits >= 8) {
			if (n == outlen)
				return -1;
			out[n++] = (unsigned char)(acc >> (bits - 8));
			bits -= 8;
		}
	}
	return (int)n;
}

static void
b32_encode(const unsigned char *in, size_t inlen, char *out)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t n = 0;

	for (size_t i = 0; i < inlen; i++) {
		acc = (acc << 8) | in[i];
		bits += 8;
		while (bits >= 5) {
			out[n++] = b32[(acc >> (bits - 5)) & 31];
			bits -= 5;
		}
	}
	if (bits > 0)
		out[n++] = b32[(acc << (5 - bits)) & 31];
	out[n] = '\0';
}

int
natsconn_nkey_public(const char *seed, char *pub, size_t publen)
{
	unsigned char raw[36], key[35];
	size_t keylen = 32;
	EVP_PKEY *pk = NULL;
	int rc = -1;

	/* 2 prefix bytes, the 32-byte Ed25519 seed, the CRC: 36 bytes, 58 characters. */
	if (strlen(seed) != 58 || publen < 57 || b32_decode(seed, 58, raw, sizeof(raw)) != 36)
		goto out;
	if (crc16(raw, 34) != (uint16_t)(raw[34] | raw[35] << 8) ||
	    (raw[0] & 0xf8) != NKEY_PREFIX_SEED ||
	    (((raw[0] & 7) << 5) | ((raw[1] & 0xf8) >> 3)) != NKEY_PREFIX_USER)
		goto out;
	if ((pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, raw + 2, 32)) == NULL ||
	    EVP_PKEY_get_raw_public_key(pk, key + 1, &keylen) != 1 || keylen != 32)
		goto out;
	key[0] = NKEY_PREFIX_USER;
	key[33] = (unsigned char)(crc16(key, 33) & 0xff);
	key[34] = (unsigned char)(crc16(key, 33) >> 8);
	b32_encode(key, sizeof(key), pub);
	rc = 0;
out:
	EVP_PKEY_free(pk);
	explicit_bzero(raw, sizeof(raw));
	return rc;
}

/* The public key of the seed in path, found as nats.c finds it: the first line that starts with
 * "SU" (the seed alone, or the block of a decorated file). */
static int
seed_file_public(const char *path, char *pub, size_t publen, char *err, size_t errlen)
{
	char line[256], seed[64];
	FILE *f = fopen(path, "r");
	int rc = -1;

	if (f == NULL) {
		snprintf(err, errlen, "cannot read NATS_NKEY_SEED_FILE \"%s\": %s", path, strerror(errno));
		return -1;
	}
	while (rc != 0 && fgets(line, sizeof(line), f) != NULL) {
		const char *p = line + strspn(line, " \t");

		if (strncmp(p, "SU", 2) != 0)
			continue;
		snprintf(seed, sizeof(seed), "%.*s", (int)strcspn(p, " \t\r\n"), p);
		rc = natsconn_nkey_public(seed, pub, publen);
		break;
	}
	fclose(f);
	explicit_bzero(line, sizeof(line));
	explicit_bzero(seed, sizeof(seed));
	if (rc != 0)
		snprintf(err, errlen, "NATS_NKEY_SEED_FILE \"%s\" holds no valid user nkey seed (a line "
		    "SU... of 58 characters)", path);
	return rc;
}

/* The error of the last nats.c call on this thread, or the status's text; without the source
 * location nats.c puts first ("(conn.c:733): "), which says nothing to the reader of a log. */
static const char *
nats_error_text(natsStatus s)
{
	const char *t = nats_GetLastError(NULL), *end;

	if (t == NULL || *t == '\0')
		return natsStatus_GetText(s);
	if (*t == '(' && (end = strstr(t, "): ")) != NULL && strchr(t, ' ') > end)
		t = end + 3;
	return t;
}

/* Who we are and how we talk: credentials and TLS. Returns 0, or -1 with err filled. */
static int
set_identity(natsOptions *opts, const struct nats_settings *s, char *err, size_t errlen)
{
	char secret[1024], pub[64];
	natsStatus st = NATS_OK;

	if (set(s->user)) {
		if (set(s->password_file)) {
			if (read_secret_line("NATS_PASSWORD_FILE", s->password_file, secret, sizeof(secret),
			    err, errlen) != 0)
				return -1;
			st = natsOptions_SetUserInfo(opts, s->user, secret);
			explicit_bzero(secret, sizeof(secret));
		} else {
			st = natsOptions_SetUserInfo(opts, s->user, s->password);
		}
		if (st != NATS_OK) {
			snprintf(err, errlen, "could not set the NATS user \"%s\": %s", s->user,
			    natsStatus_GetText(st));
			return -1;
		}
	}
	if (set(s->creds_file) &&
	    (st = natsOptions_SetUserCredentialsFromFiles(opts, s->creds_file, NULL)) != NATS_OK) {
		snprintf(err, errlen, "could not use NATS_CREDS_FILE \"%s\": %s", s->creds_file,
		    nats_error_text(st));
		return -1;
	}
	if (set(s->nkey_seed_file)) {
		if (seed_file_public(s->nkey_seed_file, pub, sizeof(pub), err, errlen) != 0)
			return -1;
		if ((st = natsOptions_SetNKeyFromSeed(opts, pub, s->nkey_seed_file)) != NATS_OK) {
			snprintf(err, errlen, "could not use NATS_NKEY_SEED_FILE \"%s\": %s",
			    s->nkey_seed_file, nats_error_text(st));
			return -1;
		}
	}
	if ((s->tls || set(s->tls_ca) || set(s->tls_cert)) &&
	    (st = natsOptions_SetSecure(opts, true)) != NATS_OK) {
		snprintf(err, errlen, "could not require TLS to NATS: %s", nats_error_text(st));
		return -1;
	}
	if (set(s->tls_ca) && (st = natsOptions_LoadCATrustedCertificates(opts, s->tls_ca)) != NATS_OK) {
		snprintf(err, errlen, "could not load NATS_TLS_CA \"%s\": %s", s->tls_ca,
		    nats_error_text(st));
		return -1;
	}
	if (set(s->tls_cert) &&
	    (st = natsOptions_LoadCertificatesChain(opts, s->tls_cert, s->tls_key)) != NATS_OK) {
		snprintf(err, errlen, "could not load NATS_TLS_CERT \"%s\" with NATS_TLS_KEY \"%s\": %s",
		    s->tls_cert, s->tls_key, nats_error_text(st));
		return -1;
	}
	return 0;
}

/* What a first attempt can fail with that no retry would mend. The rest (no server, a refused
 * or cut connection, a server still starting) is left to the library's retries. */
static bool
refusal(natsStatus s)
{
	return s == NATS_CONNECTION_AUTH_FAILED || s == NATS_SSL_ERROR || s == NATS_NOT_PERMITTED ||
	    s == NATS_SECURE_CONNECTION_WANTED || s == NATS_SECURE_CONNECTION_REQUIRED ||
	    s == NATS_INVALID_ARG || s == NATS_NO_MEMORY;
}

/* What to look at after a refusal. */
static const char *
hint(natsStatus s)
{
	if (s == NATS_CONNECTION_AUTH_FAILED)
		return " (the server refused the credentials: check NATS_USER and its password, "
		    "NATS_CREDS_FILE or NATS_NKEY_SEED_FILE)";
	if (s == NATS_SSL_ERROR)
		return " (check NATS_TLS_CA: the CA that signed the server's certificate, for the "
		    "address in NATS_URL)";
	return "";
}

/* Whether nats.c set up its TLS in this process: see natsconn_library_close(). */
static atomic_bool tls_started;

void
natsconn_library_close(void)
{
	if (!atomic_load(&tls_started))
		nats_Close();
}

natsConnection *
natsconn_open(const struct nats_settings *cfg, const char *name, bool send_asap, char *err,
    size_t errlen)
{
	natsOptions *opts = NULL;
	natsConnection *nc = NULL;
	char shown[512];
	natsStatus s;

	url_shown(cfg->url, shown, sizeof(shown));
	if (cfg->tls || (cfg->tls_ca != NULL && cfg->tls_ca[0] != '\0') ||
	    (cfg->tls_cert != NULL && cfg->tls_cert[0] != '\0') || strstr(cfg->url, "tls://") != NULL)
		atomic_store(&tls_started, true);
	if ((s = natsOptions_Create(&opts)) != NATS_OK) {
		snprintf(err, errlen, "could not set up NATS: %s", natsStatus_GetText(s));
		return NULL;
	}
	if (set_identity(opts, cfg, err, errlen) != 0) {
		natsOptions_Destroy(opts);
		return NULL;
	}
	s = set_urls(opts, cfg->url);
	if (s == NATS_OK)
		s = natsOptions_SetName(opts, name);
	if (s == NATS_OK)
		s = natsOptions_SetSendAsap(opts, send_asap);
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(opts, -1);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(opts, 250);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectJitter(opts, 100, 1000);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(opts, 2000);
	if (s == NATS_OK)
		s = natsOptions_SetDisconnectedCB(opts, on_disconnected, (void *)cfg->url);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectedCB(opts, on_reconnected, (void *)cfg->url);
	if (s == NATS_OK)
		s = natsOptions_SetClosedCB(opts, on_closed, (void *)cfg->url);
	if (s == NATS_OK)
		s = natsOptions_SetErrorHandler(opts, on_error, NULL);
	/* One attempt first, to tell a refusal (credentials, certificate) from a server that is not
	 * there yet: nats.c's background retries would try the one for ever without a word. */
	if (s == NATS_OK) {
		s = natsConnection_Connect(&nc, opts);
		if (s == NATS_OK) {
			log_info("nats: connected to %s", shown);
		} else if (!refusal(s)) {
			log_warnx("nats: %s not reachable yet (%s): connecting in the background", shown,
			    nats_error_text(s));
			s = natsOptions_SetRetryOnFailedConnect(opts, true, on_connected,
			    (void *)cfg->url);
			if (s == NATS_OK)
				s = natsConnection_Connect(&nc, opts);
			/* Not connected yet is fine: the library keeps trying in the background. */
			if (s == NATS_NOT_YET_CONNECTED)
				s = NATS_OK;
			else if (s == NATS_OK)
				log_info("nats: connected to %s", shown);
		}
	}
	if (s != NATS_OK) {
		snprintf(err, errlen, "could not connect to NATS at \"%s\"%s%s%s: %s%s", shown,
		    set(cfg->user) ? " as \"" : "", set(cfg->user) ? cfg->user : "",
		    set(cfg->user) ? "\"" : "", nats_error_text(s), hint(s));
		natsConnection_Destroy(nc);
		nc = NULL;
	}
	natsOptions_Destroy(opts);
	return nc;
}

bool
natsconn_ok(natsConnection *nc)
{
	return nc != NULL && natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED;
}
