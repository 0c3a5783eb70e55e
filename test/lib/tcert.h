/*
 * Test certificates, made at test time with certtool (gnutls-bin): a CA,
 * a certificate it signed for a host (both server and client use), one it
 * signed for another name, and a second CA with a certificate of its own,
 * which the first CA's holders must refuse. ECDSA keys: quick to make.
 */
#ifndef UFFD_TEST_TCERT_H
#define UFFD_TEST_TCERT_H

#include <stdbool.h>

struct tc_certs {
	char ca[160];			/* the CA everyone trusts */
	char cert[160], key[160];	/* signed by it, for the host (CN and IP address) */
	char other_cert[160], other_key[160];	/* signed by it, for "elsewhere.invalid" */
	char rogue_ca[160];		/* another CA */
	char rogue_cert[160], rogue_key[160];	/* signed by the other CA, for the host */
};

/*
 * Make them all in DIR (which exists), the host's certificates naming the IP
 * address HOST. False (with a line on stderr) if certtool failed.
 */
bool tc_certs_make(struct tc_certs *c, const char *dir, const char *host);

/* ARGV-style TLS options with CA, CERT and KEY (pointers into C), into A from index N; returns the new N. */
int tc_tls_args(const char **a, int n, const char *ca, const char *cert, const char *key);

#endif
