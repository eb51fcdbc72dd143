/* schedule.c — progressive bit-width schedules: parsing "int8@0,int4@200",
 * phase queries, applying transitions to quantizer states (set_spec, enable,
 * re-init from the weights) and saving / restoring the progress as a string.
 * Calls only qat.h (spec parsing, state setters) and tensor.h. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qat/qat.h"

#define OP "schedule"

// ---------------------------------------------------------------------------
// helpers

/* Glob match: '*' any run (possibly empty), '?' one character. */
static bool glob_match(const char *pat, const char *s) {
    const char *star = NULL, *resume = NULL;
    while (*s) {
        if (*pat == '?' || (*pat && *pat != '*' && *pat == *s)) {
            pat++, s++;
        } else if (*pat == '*') {
            star = pat++;
            resume = s;
        } else if (star) {
            pat = star + 1;
            s = ++resume;
        } else {
            return false;
        }
    }
    while (*pat == '*') pat++;
    return *pat == '\0';
}

static bool is_kind_token(const char *t) {
    if (strcmp(t, "ternary") == 0 || strcmp(t, "binary") == 0) return true;
    return strncmp(t, "int", 3) == 0 && t[3] >= '1' && t[3] <= '8' && t[4] == '\0';
}

/* Copies [b, e) trimmed of spaces into buf (len bytes); false when too long. */
static bool copy_trim(char *buf, size_t len, const char *b, const char *e) {
    while (b < e && isspace((unsigned char)*b)) b++;
    while (e > b && isspace((unsigned char)e[-1])) e--;
    if ((size_t)(e - b) >= len) return false;
    memcpy(buf, b, (size_t)(e - b));
    buf[e - b] = '\0';
    return true;
}

// ---------------------------------------------------------------------------
// parsing

/* One phase "SPEC@WHEN" (tok, already trimmed). */
static bg_status parse_phase(const char *tok, int64_t steps_per_epoch, bg_schedule_phase *ph) {
    const char *at = strrchr(tok, '@');
    if (!at) return bg_set_error(BG_ERR_ARG, OP ": missing '@' in \"%s\"", tok);
    memset(ph, 0, sizeof *ph);
    if (!copy_trim(ph->text, sizeof ph->text, tok, at) || ph->text[0] == '\0')
        return bg_set_error(BG_ERR_ARG, OP ": bad spec in \"%s\"", tok);
    const char *w = at + 1;
    while (isspace((unsigned char)*w)) w++;
    if (!isdigit((unsigned char)*w)) return bg_set_error(BG_ERR_ARG, OP ": bad step in \"%s\"", tok);
    char *end;
    errno = 0;
    long long v = strtoll(w, &end, 10);
    if (errno) return bg_set_error(BG_ERR_ARG, OP ": bad step in \"%s\"", tok);
    if (strcmp(end, "ep") == 0) {
        if (steps_per_epoch <= 0)
            return bg_set_error(BG_ERR_ARG, OP ": \"%s\" counts epochs but steps_per_epoch is %" PRId64,
                                tok, steps_per_epoch);
        if (v > INT64_MAX / steps_per_epoch) return bg_set_error(BG_ERR_ARG, OP ": bad step in \"%s\"", tok);
        v *= steps_per_epoch;
    } else if (*end) {
        return bg_set_error(BG_ERR_ARG, OP ": bad step in \"%s\"", tok);
    }
    ph->at = v;
    if (strcmp(ph->text, "fp32") == 0) {
        ph->fp32 = true;
        return BG_OK;
    }
    ph->kind_only = is_kind_token(ph->text);
    if (bg_quant_spec_parse(ph->text, &ph->spec) != BG_OK) {
        char why[BG_ERROR_MAX];
        snprintf(why, sizeof why, "%s", bg_last_error());
        return bg_set_error(BG_ERR_ARG, OP ": bad spec in \"%s\" (%s)", tok, why);
    }
    return BG_OK;
}

/* One rule "[PAT]phase,phase" (b..e, not trimmed). */
static bg_status parse_rule(const char *b, const char *e, int64_t spe, bg_schedule_rule *r) {
    char rule[BG_SCHEDULE_STR_MAX];
    if (!copy_trim(rule, sizeof rule, b, e)) return bg_set_error(BG_ERR_ARG, OP ": rule too long");
    memset(r, 0, sizeof *r);
    r->current = -2;
    const char *p = rule;
    if (*p == '[') {
        const char *close = strchr(p, ']');
        if (!close) return bg_set_error(BG_ERR_ARG, OP ": unclosed '[' in \"%s\"", rule);
        if (close == p + 1) return bg_set_error(BG_ERR_ARG, OP ": empty pattern in \"%s\"", rule);
        if (!copy_trim(r->pattern, sizeof r->pattern, p + 1, close))
            return bg_set_error(BG_ERR_ARG, OP ": pattern longer than %d characters in \"%s\"",
                                BG_SCHEDULE_PATTERN_MAX - 1, rule);
        p = close + 1;
    }
    if (!*p) return bg_set_error(BG_ERR_ARG, OP ": no phases in \"%s\"", rule);
    while (1) {
        const char *comma = strchr(p, ',');
        const char *pe = comma ? comma : p + strlen(p);
        char tok[BG_QUANT_SPEC_STR_MAX + 32];
        if (!copy_trim(tok, sizeof tok, p, pe)) return bg_set_error(BG_ERR_ARG, OP ": phase too long in \"%s\"", rule);
        if (!*tok) return bg_set_error(BG_ERR_ARG, OP ": empty phase in \"%s\"", rule);
        if (r->n_phases == BG_SCHEDULE_MAX_PHASES)
            return bg_set_error(BG_ERR_ARG, OP ": more than %d phases in \"%s\"", BG_SCHEDULE_MAX_PHASES, rule);
        bg_schedule_phase *ph = &r->phases[r->n_phases];
        bg_status st = parse_phase(tok, spe, ph);
        if (st != BG_OK) return st;
        if (r->n_phases > 0 && ph->at <= r->phases[r->n_phases - 1].at)
            return bg_set_error(BG_ERR_ARG, OP ": steps must increase: \"%s\" comes after step %" PRId64, tok,
                                r->phases[r->n_phases - 1].at);
        r->n_phases++;
        if (!comma) break;
        p = comma + 1;
    }
    return BG_OK;
}

bg_status bg_schedule_parse(const char *str, int64_t steps_per_epoch, bg_schedule *out) {
    if (!str || !out) return bg_set_error(BG_ERR_ARG, OP ": string or out is NULL");
    if (strlen(str) >= BG_SCHEDULE_STR_MAX)
        return bg_set_error(BG_ERR_ARG, OP ": string longer than %d characters", BG_SCHEDULE_STR_MAX - 1);
    bg_schedule *s = calloc(1, sizeof *s);
    if (!s) return bg_set_error(BG_ERR_NOMEM, OP ": out of memory");
    bg_status st = BG_OK;
    const char *p = str;
    while (isspace((unsigned char)*p)) p++;
    if (!*p) {
        st = bg_set_error(BG_ERR_ARG, OP ": empty schedule \"%s\"", str);
        goto done;
    }
    while (1) {
        const char *semi = strchr(p, ';');
        const char *e = semi ? semi : p + strlen(p);
        if (s->n_rules == BG_SCHEDULE_MAX_RULES) {
            st = bg_set_error(BG_ERR_ARG, OP ": more than %d rules in \"%s\"", BG_SCHEDULE_MAX_RULES, str);
            goto done;
        }
        bg_schedule_rule *r = &s->rules[s->n_rules];
        if ((st = parse_rule(p, e, steps_per_epoch, r)) != BG_OK) goto done;
        for (int i = 0; i < s->n_rules; i++)
            if (strcmp(s->rules[i].pattern, r->pattern) == 0) {
                st = r->pattern[0] ? bg_set_error(BG_ERR_ARG, OP ": pattern [%s] appears twice", r->pattern)
                                   : bg_set_error(BG_ERR_ARG, OP ": two rules without a pattern in \"%s\"", str);
                goto done;
            }
        s->n_rules++;
        if (!semi) break;
        p = semi + 1;
    }
    s->last_step = -1;
    *out = *s;
done:
    free(s);
    return st;
}

int bg_schedule_format(const bg_schedule *s, char *buf, size_t len) {
    size_t n = 0;
#define PUT(...)                                                                     \
    do {                                                                             \
        int k_ = snprintf(buf && n < len ? buf + n : NULL, buf && n < len ? len - n : 0, __VA_ARGS__); \
        if (k_ > 0) n += (size_t)k_;                                                 \
    } while (0)
    if (buf && len) buf[0] = '\0';
    for (int i = 0; s && i < s->n_rules; i++) {
        const bg_schedule_rule *r = &s->rules[i];
        if (i) PUT(";");
        if (r->pattern[0]) PUT("[%s]", r->pattern);
        for (int j = 0; j < r->n_phases; j++) PUT("%s%s@%" PRId64, j ? "," : "", r->phases[j].text, r->phases[j].at);
    }
#undef PUT
    return (int)n;
}

// ---------------------------------------------------------------------------
// queries

int bg_schedule_rule_for(const bg_schedule *s, const char *name) {
    if (!s) return -1;
    int fallback = -1;
    for (int i = 0; i < s->n_rules; i++) {
        if (!s->rules[i].pattern[0]) {
            if (fallback < 0) fallback = i;
        } else if (name && glob_match(s->rules[i].pattern, name)) {
            return i;
        }
    }
    return fallback;
}

static int rule_phase_at(const bg_schedule_rule *r, int64_t step) {
    int p = -1;
    for (int j = 0; j < r->n_phases && r->phases[j].at <= step; j++) p = j;
    return p;
}

int bg_schedule_phase_at(const bg_schedule *s, const char *name, int64_t step) {
    int r = bg_schedule_rule_for(s, name);
    return r < 0 ? -1 : rule_phase_at(&s->rules[r], step);
}

const char *bg_schedule_spec_name(const bg_schedule *s, const char *name, int64_t step) {
    int r = bg_schedule_rule_for(s, name);
    if (r < 0) return NULL;
    int p = rule_phase_at(&s->rules[r], step);
    return p < 0 ? "fp32" : s->rules[r].phases[p].text;
}

int bg_schedule_boundaries(const bg_schedule *s, const char *name, int64_t *out, int max) {
    int r = bg_schedule_rule_for(s, name);
    if (r < 0) return 0;
    const bg_schedule_rule *rule = &s->rules[r];
    for (int j = 0; j < rule->n_phases && j < max && out; j++) out[j] = rule->phases[j].at;
    return rule->n_phases;
}

// ---------------------------------------------------------------------------
// applying

static bg_status layer_error(const char *name, int64_t step) {
    char why[BG_ERROR_MAX];
    snprintf(why, sizeof why, "%s", bg_last_error());
    bg_status st = bg_last_status() != BG_OK ? bg_last_status() : BG_ERR_STATE;
    return bg_set_error(st, OP ": layer %s at step %" PRId64 ": %s", name ? name : "?", step, why);
}

static bool is_observer(bg_quant_range r) {
    return r == BG_QUANT_RANGE_MINMAX || r == BG_QUANT_RANGE_MOVING_MINMAX || r == BG_QUANT_RANGE_PERCENTILE ||
           r == BG_QUANT_RANGE_MSE;
}

/* The spec phase ph gives a state whose spec is cur. */
static bg_quant_spec phase_spec(const bg_schedule_phase *ph, const bg_quant_spec *cur) {
    if (!ph->kind_only) return ph->spec;
    bg_quant_spec spec = *cur;
    bool to_int = ph->spec.kind == BG_QUANT_INT;
    // An observed range suits integer codes; ternary and binary codes
    // take their scale from absmean (BitNet, their default), and back.
    if (!to_int && is_observer(spec.range)) spec.range = BG_QUANT_RANGE_ABSMEAN;
    if (to_int && spec.range == BG_QUANT_RANGE_ABSMEAN) spec.range = BG_QUANT_RANGE_MINMAX;
    // At 4 bits and fewer a min-max range wastes most levels on the rare
    // large weights (int2 sym min-max rounds most Gaussian weights to 0): the
    // clipping range is searched for the least squared error instead, as a
    // careful user would (README's QAT table: progressive 8->4->2->ternary
    // from min-max int8 gives 86.99-87.12% with it, 86.48-86.81% without).
    if (to_int && ph->spec.bits <= 4 &&
        (spec.range == BG_QUANT_RANGE_MINMAX || spec.range == BG_QUANT_RANGE_MOVING_MINMAX))
        spec.range = BG_QUANT_RANGE_MSE;
    if (spec.range != cur->range) spec.backward = BG_QUANT_BWD_DEFAULT;
    spec.kind = ph->spec.kind;
    spec.bits = ph->spec.bits;
    return spec;
}

/* Moves one state to phase p of rule r. */
static bg_status transition(const bg_schedule_rule *r, int p, bg_quant_state *st, const char *name,
                            const bg_tensor *w, int64_t step) {
    if (p < 0 || r->phases[p].fp32) {
        bg_quant_state_set_enabled(st, false);
        return BG_OK;
    }
    bg_quant_spec spec = phase_spec(&r->phases[p], bg_quant_state_spec(st));
    if (bg_quant_state_set_spec(st, &spec) != BG_OK) return layer_error(name, step);
    bg_quant_state_set_enabled(st, true);
    if (w && bg_quant_state_init_from(st, w) != BG_OK) return layer_error(name, step);
    return BG_OK;
}

bg_status bg_schedule_apply(bg_schedule *s, int64_t step, bg_quant_state *const *states,
                            const char *const *names, const bg_tensor *const *weights, int n,
                            bool *transitioned) {
    if (transitioned) *transitioned = false;
    if (!s || (n > 0 && !states)) return bg_set_error(BG_ERR_ARG, OP ": schedule or states is NULL");
    if (step < 0) return bg_set_error(BG_ERR_ARG, OP ": step must be >= 0, got %" PRId64, step);
    int target[BG_SCHEDULE_MAX_RULES];
    bool any = false;
    for (int i = 0; i < s->n_rules; i++) {
        target[i] = rule_phase_at(&s->rules[i], step);
        any |= target[i] != s->rules[i].current;
    }
    s->last_step = step;
    if (!any) return BG_OK;
    for (int k = 0; k < n; k++) {
        if (!states[k]) continue;
        const char *name = names ? names[k] : NULL;
        int r = bg_schedule_rule_for(s, name);
        if (r < 0 || target[r] == s->rules[r].current) continue;
        bg_status st = transition(&s->rules[r], target[r], states[k], name, weights ? weights[k] : NULL, step);
        if (st != BG_OK) return st;
    }
    for (int i = 0; i < s->n_rules; i++) s->rules[i].current = target[i];
    if (transitioned) *transitioned = true;
    return BG_OK;
}

// ---------------------------------------------------------------------------
// saving

int bg_schedule_save(const bg_schedule *s, char *buf, size_t len) {
    size_t n = (size_t)bg_schedule_format(s, buf, len);
#define PUT(...)                                                                     \
    do {                                                                             \
        int k_ = snprintf(buf && n < len ? buf + n : NULL, buf && n < len ? len - n : 0, __VA_ARGS__); \
        if (k_ > 0) n += (size_t)k_;                                                 \
    } while (0)
    PUT("#%" PRId64, s ? s->last_step : -1);
    for (int i = 0; s && i < s->n_rules; i++) PUT(":%d", s->rules[i].current);
#undef PUT
    return (int)n;
}

bg_status bg_schedule_load(const char *str, bg_schedule *out) {
    if (!str || !out) return bg_set_error(BG_ERR_ARG, OP ": string or out is NULL");
    const char *hash = strrchr(str, '#');
    if (!hash) return bg_set_error(BG_ERR_ARG, OP ": saved state has no '#' in \"%s\"", str);
    size_t head = (size_t)(hash - str);
    if (head >= BG_SCHEDULE_STR_MAX) return bg_set_error(BG_ERR_ARG, OP ": saved schedule too long");
    char text[BG_SCHEDULE_STR_MAX];
    memcpy(text, str, head);
    text[head] = '\0';
    bg_schedule *s = calloc(1, sizeof *s);
    if (!s) return bg_set_error(BG_ERR_NOMEM, OP ": out of memory");
    bg_status st = bg_schedule_parse(text, 0, s);   // boundaries are saved in steps
    if (st == BG_OK) {
        const char *p = hash + 1;
        char *end;
        errno = 0;
        long long last = strtoll(p, &end, 10);
        bool ok = !errno && end != p && last >= -1;
        for (int i = 0; ok && i < s->n_rules; i++) {
            p = end;
            if (*p != ':') { ok = false; break; }
            long v = strtol(p + 1, &end, 10);
            ok = end != p + 1 && v >= -2 && v < s->rules[i].n_phases;
            s->rules[i].current = (int)v;
        }
        if (!ok || *end) {
            st = bg_set_error(BG_ERR_ARG, OP ": bad saved progress \"%s\"", hash + 1);
        } else {
            s->last_step = last;
            *out = *s;
        }
    }
    free(s);
    return st;
}

// ---------------------------------------------------------------------------
// resuming

bg_status bg_schedule_sync(const bg_schedule *s, bg_quant_state *const *states, const char *const *names, int n) {
    if (!s || (n > 0 && !states)) return bg_set_error(BG_ERR_ARG, OP ": schedule or states is NULL");
    for (int k = 0; k < n; k++) {
        if (!states[k]) continue;
        const char *name = names ? names[k] : NULL;
        int r = bg_schedule_rule_for(s, name);
        if (r < 0 || s->rules[r].current == -2) continue;
        int p = s->rules[r].current;
        if (p < 0 || s->rules[r].phases[p].fp32) {
            bg_quant_state_set_enabled(states[k], false);
            continue;
        }
        bg_quant_spec spec = phase_spec(&s->rules[r].phases[p], bg_quant_state_spec(states[k]));
        if (bg_quant_spec_validate(&spec) != BG_OK) return layer_error(name, s->last_step);
        // Only a different spec is set (set_spec resets the ranges and the
        // learned parameters a checkpoint may just have restored).
        if (!bg_quant_spec_equal(&spec, bg_quant_state_spec(states[k])) &&
            bg_quant_state_set_spec(states[k], &spec) != BG_OK)
            return layer_error(name, s->last_step);
        bg_quant_state_set_enabled(states[k], true);
    }
    return BG_OK;
}

bg_status bg_schedule_weights_only(const char *str, char *buf, size_t len) {
    size_t o = 0;
    const char *p = str;
    if (len) buf[0] = 0;
    while (*p) {
        const char *e = strchr(p, ';');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        int w = snprintf(buf + o, len - o, "%s%s%.*s", o ? ";" : "", *p == '[' ? "" : "[*weight_quant]", (int)n, p);
        if (w < 0 || (size_t)w >= len - o)
            return bg_set_error(BG_ERR_ARG, "schedule: \"%.40s...\" is longer than %zu characters with its patterns",
                                str, len ? len - 1 : 0);
        o += (size_t)w;
        p += n;
        if (*p == ';') p++;
    }
    return BG_OK;
}
