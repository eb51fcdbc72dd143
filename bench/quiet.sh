# quiet.sh — sourced by the shell benchmarks: is the machine quiet before a
# run, and how much CPU did other processes take during it?
#
#   quiet_wait [SECONDS]   waits (up to SECONDS, default 60) for a second in
#                          which the machine's busy CPU time is below 0.1 core;
#                          returns 1 if that never happened
#   measured CMD...        runs CMD (its stdout to ours) and sets
#                          RUN_WALL (s), RUN_CPU (CMD's user+sys s),
#                          RUN_OTHER (other processes' CPU during the run, in
#                          cores on average), RUN_RSS (CMD's peak RSS, MiB)
#   other_mark             "" when RUN_OTHER < QUIET_MAX_OTHER (0.1), else
#                          " (not quiet: others used N cores)"
#
# Other processes' CPU = the machine's busy jiffies (/proc/stat) minus CMD's
# own CPU time, over CMD's wall time: a compiler or another benchmark shows
# up, a sleeping shell does not.

QUIET_MAX_OTHER=${QUIET_MAX_OTHER:-0.1}
_clk_tck=$(getconf CLK_TCK)

# Busy jiffies of all CPUs: user nice system irq softirq steal.
busy_jiffies() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

quiet_wait() {
    local limit=${1:-60} waited=0 a b
    while [ "$waited" -lt "$limit" ]; do
        a=$(busy_jiffies)
        sleep 1
        b=$(busy_jiffies)
        if awk -v d=$((b - a)) -v hz="$_clk_tck" -v max="$QUIET_MAX_OTHER" 'BEGIN { exit !(d / hz < max) }'; then
            return 0
        fi
        waited=$((waited + 1))
    done
    return 1
}

measured() {
    local tf a b
    tf=$(mktemp)
    a=$(busy_jiffies)
    /usr/bin/time -f '%e %U %S %M' -o "$tf" "$@"
    b=$(busy_jiffies)
    read -r RUN_WALL u s rss < <(tail -1 "$tf")
    rm -f "$tf"
    RUN_CPU=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')
    RUN_RSS=$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')
    RUN_OTHER=$(awk -v d=$((b - a)) -v hz="$_clk_tck" -v c="$RUN_CPU" -v w="$RUN_WALL" \
        'BEGIN { o = (d / hz - c) / (w > 0 ? w : 1); printf "%.2f", o < 0 ? 0 : o }')
}

other_mark() {
    awk -v o="$RUN_OTHER" -v max="$QUIET_MAX_OTHER" \
        'BEGIN { if (o >= max) printf " (not quiet: others used %.2f cores)", o }'
}

# Median and min-max of numbers on stdin: "median (min-max)".
median_range() {
    sort -g | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.3f (%.3f-%.3f)", m, v[1], v[NR] }'
}
