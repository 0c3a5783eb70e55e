/*
 * TLS on the page-server wire: `uffd-manager page-server --tls` and
 * `uffd-manager criu --page-server --tls`, with certificates made at test
 * time (tcert.h). A run under TLS serves every byte (criu-sim compares each
 * lazy page with pages-N.img); a client whose certificate another CA signed
 * is refused, as is a server whose certificate our CA did not sign or does
 * not name the host we asked for (unless --tls-no-cn-verify); a plain client
 * gets nothing from a TLS server. No task ever reads a zero where data was:
 * a refused run kills the tasks it cannot serve.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "imgfix.h"
#include "tcert.h"
#include "tcriu.h"

#define SINGLE		FIX_CRIU_DIR "/single"
#define FORK3		FIX_CRIU_DIR "/fork3"
#define SIM_MS		60000
#define EXIT_MS		20000

static struct tc_run run;
static struct tc_certs certs;

static void setup(void)
{
	tc_init(&run);
	cr_assert(tc_certs_make(&certs, run.dir, "127.0.0.1"),
		  "certtool could not make the test certificates (package gnutls-bin)");
}

static void teardown(void)
{
	tc_finish(&run);
}

static void need_root(void)
{
	if (geteuid() != 0)
		cr_skip_test("criu-sim needs root to create tasks under their image pids");
}

/* The page server under TLS with CERT and KEY (EXTRA after them). */
static void start_ps(const char *dir, const char *cert, const char *key, const char *const *extra)
{
	const char *a[24];
	int n = tc_tls_args(a, 0, certs.ca, cert, key);

	for (int i = 0; extra && extra[i] && n < 23; i++)
		a[n++] = extra[i];
	a[n] = NULL;
	cr_assert(tc_pagesrv_start(&run, dir, a), "the page server did not start; log in %s",
		  run.ps_log);
}

/* The daemon in remote mode on the page server, with ARGS (TLS ones among them). */
static bool start_daemon(const char *dir, const char *const *args)
{
	const char *a[32] = { "--page-server", "--address", "127.0.0.1", "--port", run.ps_port,
			      "--page-server-grace", "0" };
	int n = 7;

	for (int i = 0; args && args[i] && n < 31; i++)
		a[n++] = args[i];
	a[n] = NULL;
	return tc_daemon_start(&run, dir, a);
}

/* Lazy pages of every task of DIR, from the images. */
static uint64_t total_lazy(const char *dir)
{
	uint32_t pids[16];
	size_t n = tc_tasks(dir, pids, 16);
	uint64_t sum = 0;

	for (size_t i = 0; i < n; i++)
		sum += tc_lazy_pages(dir, pids[i]);
	return sum;
}

/* A whole run: every task checked every byte, every lazy page came once over TLS. */
static void expect_clean(const char *dir)
{
	int sim = tc_sim_run(&run, dir, NULL, SIM_MS);

	cr_assert_eq(sim, 0, "criu-sim: a task saw wrong memory or failed (exit %d); see %s", sim,
		     run.simout);
	cr_assert_eq(tc_daemon_exit_code(&run, EXIT_MS), 0, "log in %s", run.log);
	cr_expect(tc_file_has(run.log, "over TLS (certificate checked)"), "log in %s", run.log);
	cr_expect_eq(tc_file_number(run.log, "remote: fetched "), (double)total_lazy(dir),
		     "every lazy page fetched once; log in %s", run.log);
	cr_expect_eq(tc_pagesrv_stop(&run), 0, "page server log in %s", run.ps_log);
	cr_expect(tc_file_has(run.ps_log, "with TLS (client certificates required)"), "%s", run.ps_log);
	cr_expect(tc_file_has(run.ps_log, "TLS handshake done, its certificate checked"), "%s",
		  run.ps_log);
	cr_expect(tc_file_has(run.ps_log, "done (CLOSE, then hung up)"), "%s", run.ps_log);
	cr_expect(tc_file_has(run.ps_log, "0 requests refused, 0 idle connections closed"), "%s",
		  run.ps_log);
}

Test(tls, fork3_every_byte, .init = setup, .fini = teardown, .timeout = 90)
{
	const char *a[16];

	need_root();
	a[tc_tls_args(a, 0, certs.ca, certs.cert, certs.key)] = NULL;
	start_ps(FORK3, certs.cert, certs.key, NULL);
	cr_assert(start_daemon(FORK3, a), "log in %s", run.log);
	expect_clean(FORK3);
	cr_expect(tc_file_has(run.log, "4 tasks, 4 processes served, 0 exited first"), "%s", run.log);
	run.passed = true;
}

/*
 * The server's certificate names elsewhere.invalid: a client asking for
 * 127.0.0.1 refuses it, unless --tls-no-cn-verify (as criu's option).
 */
Test(tls, server_name_checked, .init = setup, .fini = teardown, .timeout = 90)
{
	const char *a[16];
	int n;

	need_root();
	a[tc_tls_args(a, 0, certs.ca, certs.cert, certs.key)] = NULL;
	start_ps(SINGLE, certs.other_cert, certs.other_key, (const char *[]){ "--tls-no-cn-verify", NULL });
	cr_assert_not(start_daemon(SINGLE, a), "the daemon took a server named elsewhere.invalid");
	cr_expect_eq(tc_daemon_exit_code(&run, EXIT_MS), 1);
	cr_expect(tc_file_has(run.log, "the peer's certificate is refused"), "log in %s", run.log);
	cr_expect(tc_file_has(run.log, "127.0.0.1"), "log in %s", run.log);
	/* The same server, the name not checked: served in full. */
	n = tc_tls_args(a, 0, certs.ca, certs.cert, certs.key);
	a[n++] = "--tls-no-cn-verify";
	a[n] = NULL;
	cr_assert(start_daemon(SINGLE, a), "log in %s", run.log);
	expect_clean(SINGLE);
	run.passed = true;
}

Test(tls, server_of_another_ca_refused, .init = setup, .fini = teardown, .timeout = 60)
{
	const char *a[16];

	need_root();
	a[tc_tls_args(a, 0, certs.ca, certs.cert, certs.key)] = NULL;
	start_ps(SINGLE, certs.rogue_cert, certs.rogue_key, NULL);
	cr_assert_not(start_daemon(SINGLE, a), "the daemon took a server its CA did not sign");
	cr_expect_eq(tc_daemon_exit_code(&run, EXIT_MS), 1);
	cr_expect(tc_file_has(run.log, "the peer's certificate is refused"), "log in %s", run.log);
	cr_expect(tc_file_has(run.err, "page server 127.0.0.1:"), "stderr in %s", run.err);
	run.passed = true;
}

/*
 * The restore side comes with a certificate another CA signed: the page
 * server refuses it and sends no page. The daemon learns it (at its
 * handshake, or from the server's alert on its first request under TLS
 * 1.3) and never lets a task run on what it did not get.
 */
static void client_refused(const char *const *client_tls, const char *want_ps)
{
	uint32_t pids[16];
	size_t n = tc_tasks(FORK3, pids, 16);

	need_root();
	start_ps(FORK3, certs.cert, certs.key, NULL);
	if (start_daemon(FORK3, client_tls)) {
		int sim = tc_sim_run(&run, FORK3, NULL, SIM_MS);

		cr_expect_neq(sim, 0, "the tasks ran without their pages? %s", run.simout);
		cr_expect_not(tc_file_has(run.simout, "differs from"), "%s", run.simout);
		cr_expect_not(tc_file_has(run.simout, "WRONG MEMORY"), "%s", run.simout);
		cr_expect_eq(tc_daemon_exit_code(&run, EXIT_MS), 1, "log in %s", run.log);
		cr_expect(tc_file_has(run.log, "remote: lost the page server"), "log in %s", run.log);
		/* Each task killed before it could read a page, or never handed over. */
		for (size_t i = 0; i < n; i++) {
			uint64_t lazy = tc_lazy_pages(FORK3, pids[i]);
			char killed[128], never[96];

			snprintf(killed, sizeof(killed), "criu: pid %u (host %u): %" PRIu64 " of %" PRIu64 " lazy pages not served",
				 pids[i], pids[i], lazy, lazy);
			snprintf(never, sizeof(never), "criu: pid %u: never handed over", pids[i]);
			cr_expect(tc_file_has(run.log, killed) || tc_file_has(run.log, never),
				  "pid %u: %s", pids[i], run.log);
		}
	} else {
		cr_expect_eq(tc_daemon_exit_code(&run, EXIT_MS), 1);
	}
	cr_expect_eq(tc_pagesrv_stop(&run), 0, "log in %s", run.ps_log);
	cr_expect(tc_file_has(run.ps_log, want_ps), "want \"%s\": %s", want_ps, run.ps_log);
	cr_expect(tc_file_has(run.ps_log, " 0 GETs answered, 0 pages sent"), "%s", run.ps_log);
	cr_expect_not(tc_file_has(run.ps_log, "TLS handshake done"), "%s", run.ps_log);
}

Test(tls, client_of_another_ca_refused, .init = setup, .fini = teardown, .timeout = 90)
{
	const char *a[16];

	/* It trusts our CA (so the server is fine to it); its own certificate is the other CA's. */
	a[tc_tls_args(a, 0, certs.ca, certs.rogue_cert, certs.rogue_key)] = NULL;
	client_refused(a, "refused: TLS: the peer's certificate is refused");
	cr_expect(tc_file_has(run.ps_log, "The certificate issuer is unknown"), "%s", run.ps_log);
	cr_expect(tc_file_has(run.ps_log, ", 1 refused by TLS"), "%s", run.ps_log);
	cr_expect(tc_file_has(run.log, "the peer refused us") ||
		  tc_file_has(run.log, "TLS handshake failed"), "log in %s", run.log);
	run.passed = true;
}

Test(tls, plain_client_refused, .init = setup, .fini = teardown, .timeout = 90)
{
	/* No TLS at all: its first GET is no ClientHello. */
	client_refused(NULL, "refused: TLS handshake failed");
	run.passed = true;
}

Test(tls, options_checked, .init = setup, .fini = teardown, .timeout = 60)
{
	const char *lone[] = { "--page-server", "--address", "127.0.0.1", "--port", "1",
			       "--tls-cert", certs.cert, NULL };
	const char *missing[] = { "--page-server", "--address", "127.0.0.1", "--port", "1", "--tls",
				  "--tls-cacert", "/nonexistent/ca.pem", NULL };
	const char *no_ps[] = { "--tls", NULL };
	const char *ps_missing[] = { "--tls", "--tls-cacert", certs.ca, "--tls-cert", certs.cert,
				     "--tls-key", "/nonexistent/key.pem", NULL };

	cr_assert_not(tc_daemon_start(&run, SINGLE, lone));
	cr_expect_eq(tc_daemon_exit_code(&run, EXIT_MS), 2);
	cr_expect(tc_file_has(run.err, "go with --tls"), "%s", run.err);
	cr_assert_not(tc_daemon_start(&run, SINGLE, no_ps));
	cr_expect_eq(tc_daemon_exit_code(&run, EXIT_MS), 2);
	cr_expect(tc_file_has(run.err, "--tls goes with --page-server"), "%s", run.err);
	cr_assert_not(tc_daemon_start(&run, SINGLE, missing));
	cr_expect_eq(tc_daemon_exit_code(&run, EXIT_MS), 1);
	cr_expect(tc_file_has(run.err, "CA certificate /nonexistent/ca.pem"), "%s", run.err);
	cr_assert_not(tc_pagesrv_start(&run, SINGLE, ps_missing));
	cr_expect(tc_file_has(run.ps_log, "/nonexistent/key.pem"), "%s", run.ps_log);
	run.passed = true;
}
