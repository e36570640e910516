/*
 * mock-broker: hosts librdkafka's in-memory mock Kafka cluster as a child
 * process so that Node dev tools and tests get a protocol-faithful broker
 * without Docker or a JVM. See tools/dev-kafka/README.md.
 *
 * Protocol: stdout carries exactly one JSON "ready" line, then one line
 * ("ok" or "error <message>") per stdin command. librdkafka's own logging
 * goes to stderr so it can never corrupt that protocol.
 *
 * Build: cc -O2 -Wall -o bin/mock-broker src/mock-broker.c -lrdkafka
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define MAX_TOPICS 64
#define LINE_MAX_LEN 1024

static volatile sig_atomic_t stop_requested = 0;

static void on_signal(int sig) {
        (void)sig;
        stop_requested = 1;
}

/* librdkafka logs from its own threads; route everything to stderr. */
static void log_to_stderr(const rd_kafka_t *rk, int level, const char *fac,
                          const char *buf) {
        (void)rk;
        fprintf(stderr, "mock-broker %d %s: %s\n", level, fac, buf);
}

static void reply_ok(void) {
        fputs("ok\n", stdout);
        fflush(stdout);
}

static void reply_error(const char *fmt, const char *detail) {
        fputs("error ", stdout);
        fprintf(stdout, fmt, detail);
        fputc('\n', stdout);
        fflush(stdout);
}

static void reply_err(rd_kafka_resp_err_t err) {
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
                reply_ok();
        else
                reply_error("%s", rd_kafka_err2str(err));
}

/* strtol wrapper that rejects trailing junk, so "up 1x" is an error. */
static int parse_int(const char *s, long *out) {
        char *end;
        if (!s || !*s)
                return 0;
        errno = 0;
        *out  = strtol(s, &end, 10);
        return errno == 0 && *end == '\0';
}

static int clamp_replication(int brokers) {
        return brokers < 3 ? brokers : 3;
}

static const char *usage_for(const char *cmd) {
        static const char *const usages[][2] = {
            {"down", "usage: down <brokerId>"},
            {"up", "usage: up <brokerId>"},
            {"rtt", "usage: rtt <brokerId> <ms>"},
            {"errors", "usage: errors <apiKey> <errCode> [<count>]"},
            {"broker-errors",
             "usage: broker-errors <brokerId> <apiKey> <errCode> <count>"},
            {"topic", "usage: topic <name> <partitions>"},
            {"leader", "usage: leader <topic> <partition> <brokerId>"},
            {"coordinator", "usage: coordinator group|transaction <id> <brokerId>"},
            {"ping", "usage: ping"},
            {"quit", "usage: quit"},
        };
        size_t i;
        for (i = 0; i < sizeof(usages) / sizeof(usages[0]); i++)
                if (!strcmp(cmd, usages[i][0]))
                        return usages[i][1];
        return "unknown command (down, up, rtt, errors, broker-errors, "
               "topic, leader, coordinator, ping, quit)";
}

/* Returns 1 when the caller should quit. */
static int handle_command(rd_kafka_mock_cluster_t *mc, int broker_cnt,
                          char *line) {
        char *argv[8];
        int argc = 0;
        char *save = NULL;
        char *tok;
        long a, b, c, d;

        for (tok = strtok_r(line, " \t\r\n", &save); tok && argc < 8;
             tok = strtok_r(NULL, " \t\r\n", &save))
                argv[argc++] = tok;
        if (tok) {
                reply_error("%s", "too many arguments");
                return 0;
        }
        if (argc == 0) {
                reply_error("%s", "empty command");
                return 0;
        }

        /* The mock accepts -1 as "all brokers"; any other id must exist,
         * otherwise 2.0.2 silently ignores it and a typo would look fine. */
#define CHECK_BROKER(v)                                                        \
        do {                                                                   \
                if ((v) != -1 && ((v) < 1 || (v) > broker_cnt)) {             \
                        reply_error("unknown broker %s", argv[1]);             \
                        return 0;                                              \
                }                                                              \
        } while (0)

        if (!strcmp(argv[0], "quit") && argc == 1) {
                reply_ok();
                return 1;
        } else if (!strcmp(argv[0], "ping") && argc == 1) {
                reply_ok();
        } else if (!strcmp(argv[0], "down") && argc == 2 &&
                   parse_int(argv[1], &a)) {
                CHECK_BROKER(a);
                reply_err(rd_kafka_mock_broker_set_down(mc, (int32_t)a));
        } else if (!strcmp(argv[0], "up") && argc == 2 &&
                   parse_int(argv[1], &a)) {
                CHECK_BROKER(a);
                reply_err(rd_kafka_mock_broker_set_up(mc, (int32_t)a));
        } else if (!strcmp(argv[0], "rtt") && argc == 3 &&
                   parse_int(argv[1], &a) && parse_int(argv[2], &b) &&
                   b >= 0) {
                CHECK_BROKER(a);
                reply_err(rd_kafka_mock_broker_set_rtt(mc, (int32_t)a, (int)b));
        } else if (!strcmp(argv[0], "errors") && (argc == 3 || argc == 4) &&
                   parse_int(argv[1], &a) && parse_int(argv[2], &b) &&
                   (argc == 3 || (parse_int(argv[3], &c) && c >= 1))) {
                size_t i, cnt = argc == 4 ? (size_t)c : 1;
                rd_kafka_resp_err_t *errs;
                if (cnt > 100000) {
                        reply_error("%s", "count too large");
                        return 0;
                }
                errs = malloc(cnt * sizeof(*errs));
                if (!errs) {
                        reply_error("%s", "out of memory");
                        return 0;
                }
                for (i = 0; i < cnt; i++)
                        errs[i] = (rd_kafka_resp_err_t)b;
                rd_kafka_mock_push_request_errors_array(mc, (int16_t)a, cnt,
                                                        errs);
                free(errs);
                reply_ok();
        } else if (!strcmp(argv[0], "broker-errors") && argc == 5 &&
                   parse_int(argv[1], &a) && parse_int(argv[2], &b) &&
                   parse_int(argv[3], &c) && parse_int(argv[4], &d) &&
                   d >= 1 && d <= 100000) {
                long i;
                rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
                if (a < 1 || a > broker_cnt) {
                        reply_error("unknown broker %s", argv[1]);
                        return 0;
                }
                /* Variadic API: one (err, rtt) tuple per call. */
                for (i = 0; i < d && !err; i++)
                        err = rd_kafka_mock_broker_push_request_error_rtts(
                            mc, (int32_t)a, (int16_t)b, 1,
                            (rd_kafka_resp_err_t)c, 0);
                reply_err(err);
        } else if (!strcmp(argv[0], "topic") && argc == 3 &&
                   parse_int(argv[2], &a) && a >= 1) {
                reply_err(rd_kafka_mock_topic_create(
                    mc, argv[1], (int)a, clamp_replication(broker_cnt)));
        } else if (!strcmp(argv[0], "leader") && argc == 4 &&
                   parse_int(argv[2], &a) && parse_int(argv[3], &b) &&
                   a >= 0) {
                if (b != -1 && (b < 1 || b > broker_cnt)) {
                        reply_error("unknown broker %s", argv[3]);
                        return 0;
                }
                reply_err(rd_kafka_mock_partition_set_leader(
                    mc, argv[1], (int32_t)a, (int32_t)b));
        } else if (!strcmp(argv[0], "coordinator") && argc == 4 &&
                   (!strcmp(argv[1], "group") ||
                    !strcmp(argv[1], "transaction")) &&
                   parse_int(argv[3], &a)) {
                /* The mock would accept any id here; a non-existent
                 * coordinator is better expressed by "down". */
                if (a < 1 || a > broker_cnt) {
                        reply_error("unknown broker %s", argv[3]);
                        return 0;
                }
                reply_err(rd_kafka_mock_coordinator_set(mc, argv[1], argv[2],
                                                        (int32_t)a));
        } else {
                reply_error("%s", usage_for(argv[0]));
        }
        return 0;
#undef CHECK_BROKER
}

static void usage(void) {
        fprintf(stderr,
                "usage: mock-broker [--brokers N] [--topic name:partitions]...\n");
}

int main(int argc, char **argv) {
        int brokers = 1;
        const char *topic_specs[MAX_TOPICS];
        int topic_cnt = 0;
        int i;
        char errstr[512];
        char line[LINE_MAX_LEN];
        rd_kafka_conf_t *conf;
        rd_kafka_t *rk;
        rd_kafka_mock_cluster_t *mc;
        struct sigaction sa;

        for (i = 1; i < argc; i++) {
                if (!strcmp(argv[i], "--brokers") && i + 1 < argc) {
                        long n;
                        if (!parse_int(argv[++i], &n) || n < 1 || n > 64) {
                                fprintf(stderr, "--brokers must be 1..64\n");
                                return 2;
                        }
                        brokers = (int)n;
                } else if (!strcmp(argv[i], "--topic") && i + 1 < argc) {
                        if (topic_cnt == MAX_TOPICS) {
                                fprintf(stderr, "too many topics\n");
                                return 2;
                        }
                        topic_specs[topic_cnt++] = argv[++i];
                } else {
                        usage();
                        return 2;
                }
        }

        /* No SA_RESTART: a signal must interrupt the blocking fgets() so
         * the main loop notices stop_requested and shuts down cleanly. */
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        /* A parent that vanished must not kill us mid-reply via SIGPIPE;
         * we exit on stdin EOF instead. */
        signal(SIGPIPE, SIG_IGN);

        conf = rd_kafka_conf_new();
        rd_kafka_conf_set_log_cb(conf, log_to_stderr);
        /* The host handle never talks to a broker; silence its warnings
         * about missing bootstrap.servers. */
        rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr));
        rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
        if (!rk) {
                fprintf(stderr, "rd_kafka_new failed: %s\n", errstr);
                return 1;
        }

        mc = rd_kafka_mock_cluster_new(rk, brokers);
        if (!mc) {
                fprintf(stderr, "rd_kafka_mock_cluster_new failed\n");
                rd_kafka_destroy(rk);
                return 1;
        }

        for (i = 0; i < topic_cnt; i++) {
                char name[256];
                const char *colon = strrchr(topic_specs[i], ':');
                long parts = 1;
                size_t len;
                rd_kafka_resp_err_t err;

                if (colon) {
                        if (!parse_int(colon + 1, &parts) || parts < 1) {
                                fprintf(stderr, "bad --topic %s\n",
                                        topic_specs[i]);
                                goto fail;
                        }
                        len = (size_t)(colon - topic_specs[i]);
                } else {
                        len = strlen(topic_specs[i]);
                }
                if (len == 0 || len >= sizeof(name)) {
                        fprintf(stderr, "bad --topic %s\n", topic_specs[i]);
                        goto fail;
                }
                memcpy(name, topic_specs[i], len);
                name[len] = '\0';
                err = rd_kafka_mock_topic_create(mc, name, (int)parts,
                                                 clamp_replication(brokers));
                if (err) {
                        fprintf(stderr, "topic %s: %s\n", name,
                                rd_kafka_err2str(err));
                        goto fail;
                }
        }

        {
                /* bootstraps() looks like "127.0.0.1:p1,127.0.0.1:p2": no
                 * characters needing JSON escaping. */
                printf("{\"ready\":true,\"bootstrap\":\"%s\"}\n",
                       rd_kafka_mock_cluster_bootstraps(mc));
                fflush(stdout);
        }

        while (!stop_requested) {
                if (!fgets(line, sizeof(line), stdin)) {
                        if (ferror(stdin) && errno == EINTR && !stop_requested) {
                                clearerr(stdin);
                                continue;
                        }
                        break; /* EOF, signal, or read error */
                }
                if (!strchr(line, '\n') && !feof(stdin)) {
                        int ch;
                        while ((ch = fgetc(stdin)) != EOF && ch != '\n')
                                ;
                        reply_error("%s", "line too long");
                        continue;
                }
                if (handle_command(mc, brokers, line))
                        break;
        }

        rd_kafka_mock_cluster_destroy(mc);
        rd_kafka_destroy(rk);
        return 0;

fail:
        rd_kafka_mock_cluster_destroy(mc);
        rd_kafka_destroy(rk);
        return 1;
}
