/* Logging: only the edges (main loops, request handlers) log. */
#ifndef NB_LOG_H
#define NB_LOG_H

enum nb_log_level { NB_LOG_DEBUG, NB_LOG_INFO, NB_LOG_WARN, NB_LOG_ERROR };

/* prog is kept by pointer: pass a string literal. */
void nb_log_init(const char *prog, enum nb_log_level min);
void nb_log(enum nb_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define nb_debug(...) nb_log(NB_LOG_DEBUG, __VA_ARGS__)
#define nb_info(...) nb_log(NB_LOG_INFO, __VA_ARGS__)
#define nb_warn(...) nb_log(NB_LOG_WARN, __VA_ARGS__)
#define nb_error(...) nb_log(NB_LOG_ERROR, __VA_ARGS__)

#endif
