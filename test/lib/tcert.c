/* Test certificates made with certtool (tcert.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tcert.h"

/* Run CMD quietly; true if it exited 0. */
static bool run(const char *cmd)
{
	char full[2048];
	int st;

	snprintf(full, sizeof(full), "%s >/dev/null 2>&1", cmd);
	st = system(full);
	if (st != 0)
		fprintf(stderr, "tcert: failed (%d): %s\n", st, cmd);
	return st == 0;
}

static bool write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return false;
	fputs(text, f);
	return fclose(f) == 0;
}

/* A CA named CN: DIR/NAME.pem and DIR/NAME-key.pem. */
static bool make_ca(const char *dir, const char *name, const char *cn)
{
	char tmpl[256], text[256], cmd[1024];

	snprintf(tmpl, sizeof(tmpl), "%s/%s.tmpl", dir, name);
	snprintf(text, sizeof(text), "cn = \"%s\"\nca\ncert_signing_key\ncrl_signing_key\nexpiration_days = 2\n", cn);
	if (!write_file(tmpl, text))
		return false;
	snprintf(cmd, sizeof(cmd), "certtool --generate-privkey --key-type=ecdsa --outfile %s/%s-key.pem", dir, name);
	if (!run(cmd))
		return false;
	snprintf(cmd, sizeof(cmd), "certtool --generate-self-signed --load-privkey %s/%s-key.pem --template %s --outfile %s/%s.pem",
		 dir, name, tmpl, dir, name);
	return run(cmd);
}

/* A certificate for CN (an IP address also put in the SAN when IP) signed by CA: DIR/NAME.pem and DIR/NAME-key.pem. */
static bool make_leaf(const char *dir, const char *ca, const char *name, const char *cn, bool ip)
{
	char tmpl[256], text[512], cmd[1024];

	snprintf(tmpl, sizeof(tmpl), "%s/%s.tmpl", dir, name);
	snprintf(text, sizeof(text), "cn = \"%s\"\n%s%s%stls_www_server\ntls_www_client\nsigning_key\nencryption_key\nexpiration_days = 2\n",
		 cn, ip ? "ip_address = \"" : "dns_name = \"", cn, "\"\n");
	if (!write_file(tmpl, text))
		return false;
	snprintf(cmd, sizeof(cmd), "certtool --generate-privkey --key-type=ecdsa --outfile %s/%s-key.pem", dir, name);
	if (!run(cmd))
		return false;
	snprintf(cmd, sizeof(cmd), "certtool --generate-certificate --load-privkey %s/%s-key.pem --load-ca-certificate %s/%s.pem --load-ca-privkey %s/%s-key.pem --template %s --outfile %s/%s.pem",
		 dir, name, dir, ca, dir, ca, tmpl, dir, name);
	return run(cmd);
}

bool tc_certs_make(struct tc_certs *c, const char *dir, const char *host)
{
	memset(c, 0, sizeof(*c));
	if (!make_ca(dir, "ca", "uffd test CA") || !make_leaf(dir, "ca", "host", host, true) ||
	    !make_leaf(dir, "ca", "other", "elsewhere.invalid", false) ||
	    !make_ca(dir, "rogue-ca", "another CA") ||
	    !make_leaf(dir, "rogue-ca", "rogue", host, true))
		return false;
	snprintf(c->ca, sizeof(c->ca), "%s/ca.pem", dir);
	snprintf(c->cert, sizeof(c->cert), "%s/host.pem", dir);
	snprintf(c->key, sizeof(c->key), "%s/host-key.pem", dir);
	snprintf(c->other_cert, sizeof(c->other_cert), "%s/other.pem", dir);
	snprintf(c->other_key, sizeof(c->other_key), "%s/other-key.pem", dir);
	snprintf(c->rogue_ca, sizeof(c->rogue_ca), "%s/rogue-ca.pem", dir);
	snprintf(c->rogue_cert, sizeof(c->rogue_cert), "%s/rogue.pem", dir);
	snprintf(c->rogue_key, sizeof(c->rogue_key), "%s/rogue-key.pem", dir);
	return true;
}

int tc_tls_args(const char **a, int n, const char *ca, const char *cert, const char *key)
{
	a[n++] = "--tls";
	a[n++] = "--tls-cacert";
	a[n++] = ca;
	a[n++] = "--tls-cert";
	a[n++] = cert;
	a[n++] = "--tls-key";
	a[n++] = key;
	return n;
}
