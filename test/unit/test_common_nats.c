/* Unit tests of the NATS settings: an nkey seed's public key, and the mixes of credentials and
 * TLS files that natsconn_settings_check() refuses. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "natsconn.h"
#include "unit.h"

static void
test_nkey_public(void)
{
	char pub[64];

	/* The user nkey pair of nats-server's documentation (and nats.c's tests). */
	CHECK(natsconn_nkey_public("SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY", pub,
	    sizeof(pub)) == 0);
	CHECK_STR(pub, "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4");
	/* A changed character breaks the checksum; other kinds of seed and short input are refused. */
	CHECK(natsconn_nkey_public("SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VA", pub,
	    sizeof(pub)) == -1);
	CHECK(natsconn_nkey_public("SUACSSL3", pub, sizeof(pub)) == -1);
	CHECK(natsconn_nkey_public("suacssl3uahudxkfsnvuzrf5uhpmwz6bfdtj7m6usdxiednppqyyycu3vy", pub,
	    sizeof(pub)) == -1);
	CHECK(natsconn_nkey_public("SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY", pub,
	    20) == -1);
}

static struct nats_settings
base(void)
{
	return (struct nats_settings){ .url = "nats://localhost:4222", .user = "", .password = "",
		.password_file = "", .creds_file = "", .nkey_seed_file = "", .tls_ca = "",
		.tls_cert = "", .tls_key = "" };
}

static int
check(struct nats_settings s, char *err, size_t errlen)
{
	err[0] = '\0';
	return natsconn_settings_check(&s, err, errlen);
}

static void
test_settings_check(void)
{
	char err[512], file[] = "/tmp/unit-nats-XXXXXX";
	struct nats_settings s;
	int fd = mkstemp(file);

	CHECK(fd >= 0);
	if (fd >= 0) {
		CHECK(write(fd, "s3cret\n", 7) == 7);
		close(fd);
	}
	CHECK(check(base(), err, sizeof(err)) == 0);
	s = base();
	s.user = "relay";
	s.password_file = file;
	CHECK(check(s, err, sizeof(err)) == 0);
	s.password = "s3cret";
	CHECK(check(s, err, sizeof(err)) == -1);
	CHECK(strstr(err, "NATS_PASSWORD and NATS_PASSWORD_FILE") != NULL);
	CHECK(strstr(err, "s3cret") == NULL);
	s = base();
	s.user = "relay";
	CHECK(check(s, err, sizeof(err)) == -1);
	CHECK(strstr(err, "NATS_USER is set without") != NULL);
	s = base();
	s.password = "s3cret";
	CHECK(check(s, err, sizeof(err)) == -1);
	CHECK_STR(err, "NATS_PASSWORD is set without NATS_USER");
	/* Two ways to authenticate, named, and never the password. */
	s = base();
	s.user = "relay";
	s.password_file = file;
	s.creds_file = file;
	CHECK(check(s, err, sizeof(err)) == -1);
	CHECK_STR(err, "NATS_USER and NATS_CREDS_FILE are both set: give NATS one way to authenticate");
	s = base();
	s.url = "nats://relay:s3cret@localhost:4222";
	s.nkey_seed_file = file;
	CHECK(check(s, err, sizeof(err)) == -1);
	CHECK(strstr(err, "credentials inside NATS_URL and NATS_NKEY_SEED_FILE") != NULL);
	CHECK(strstr(err, "s3cret") == NULL);
	s = base();
	s.url = "nats://relay:s3cret@localhost:4222";
	CHECK(check(s, err, sizeof(err)) == 0);
	s = base();
	s.creds_file = file;
	s.nkey_seed_file = file;
	CHECK(check(s, err, sizeof(err)) == -1);
	/* TLS: a certificate needs its key; every file must be readable. */
	s = base();
	s.tls_cert = file;
	CHECK(check(s, err, sizeof(err)) == -1);
	CHECK_STR(err, "NATS_TLS_CERT is set without NATS_TLS_KEY");
	s.tls_key = file;
	s.tls_ca = file;
	CHECK(check(s, err, sizeof(err)) == 0);
	s.tls_ca = "/nonexistent/ca.pem";
	CHECK(check(s, err, sizeof(err)) == -1);
	CHECK_STR(err, "cannot read NATS_TLS_CA \"/nonexistent/ca.pem\": No such file or directory");
	unlink(file);
}

int
main(void)
{
	test_nkey_public();
	test_settings_check();
	return unit_report("common_nats");
}
