#!/bin/sh
# bench/sched-bench.sh: the scheduler under a long prompt, on one backend.
#  1. 32 streams decode (greedy, 512 tokens each); inter-token latency p50
#     and p99 of those streams alone, then again while 4,000-token prompts
#     arrive one after another: the ratio shows how much chunked prefill
#     disturbs running streams (target: p99 at most 2x).
#  2. Cancel during a 4,000-token prefill: requests cancelled 20-200 ms
#     after they are sent; the server's cancel latency (cancel seen -> KV
#     freed, orcd_cancel_latency_seconds) p50/p95 (target on a GPU: p95 <
#     20 ms, one prefill chunk).
#
# usage: bench/sched-bench.sh [--backend cuda|cpu] [-m MODEL] [--streams N]
#            [--long N] [--prefill-chunk N] [--bin DIR] [--work DIR]
#   Without -m, generates qwen2.5-0.5b q4_k_m with orcd-mkmodel.
set -eu
backend=cuda
model=""
streams=32
long=4000
chunk=""
top=$(cd "$(dirname "$0")/.." && pwd)
bin=""
work=${TMPDIR:-/tmp}/orcd-sched-bench
while [ $# -gt 0 ]; do
	case "$1" in
	--backend) backend=$2; shift 2 ;;
	-m) model=$2; shift 2 ;;
	--streams) streams=$2; shift 2 ;;
	--long) long=$2; shift 2 ;;
	--prefill-chunk) chunk=$2; shift 2 ;;
	--bin) bin=$2; shift 2 ;;
	--work) work=$2; shift 2 ;;
	*) echo "usage: $0 [--backend B] [-m MODEL] [--streams N] [--long N] [--prefill-chunk N] [--bin DIR] [--work DIR]" >&2
	   exit 2 ;;
	esac
done
if [ -n "$bin" ]; then
	orcd=$bin/orcd; mkmodel=$bin/orcd-mkmodel; loadgen=$bin/loadgen
else
	orcd=$top/orcd; mkmodel=$top/orcd-mkmodel; loadgen=$top/bench/loadgen
fi
mkdir -p "$work"
if [ -z "$model" ]; then
	model=$work/qwen2.5-0.5b-q4_k_m.gguf
	[ -f "$model" ] || "$mkmodel" --preset qwen2.5-0.5b --quant q4_k_m --ascii-output --quiet -o "$model"
fi

metrics() {
	python3 -c "import urllib.request, sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$1/metrics').read().decode())"
}
post_cancel() {
	python3 -c "
import urllib.request, urllib.error
r = urllib.request.Request('http://127.0.0.1:$1/cancel', data=b'{\"job_id\":\"$2\"}', method='POST')
try: urllib.request.urlopen(r)
except urllib.error.HTTPError: pass"
}
# p-quantile of a Prometheus histogram (upper bucket bound), from /metrics text
hist_q() {
	awk -v name="$1" -v q="$2" '
	    index($0, name "_bucket{") == 1 { split($0, a, "le=\""); split(a[2], b, "\""); le[n] = b[1];
	        c[n] = $NF; n++ }
	    END { tot = c[n - 1]; if (tot == 0) { print "-"; exit }
	        for (i = 0; i < n; i++) if (c[i] >= q * tot) { printf "%.2f", le[i] * 1e3; exit } }'
}
itl() {   # loadgen report -> "p50 p99" of inter-token (ms)
	awk '/^inter-token / { print $4, $7 }' "$1"
}

ctx=$((3 * long + 600))   # --prompt-tokens is about N words; tokenizers differ
rm -f "$work/orcd.ready"
# shellcheck disable=SC2086
"$orcd" serve -m "$model" --backend "$backend" --listen 127.0.0.1:0 \
    --ready-file "$work/orcd.ready" --max-batch $((streams + 8)) --ctx-size $ctx \
    ${chunk:+--prefill-chunk $chunk} --log-level warn > "$work/orcd.log" 2>&1 &
spid=$!
trap 'kill $spid 2>/dev/null || true' EXIT
for i in $(seq 1 600); do [ -f "$work/orcd.ready" ] && break; sleep 0.2; done
port=$(sed -n 's/^port=//p' "$work/orcd.ready" 2>/dev/null || true)
[ -n "$port" ] || { echo "orcd serve did not start:"; tail -n 20 "$work/orcd.log"; exit 1; }
echo "orcd serve --backend $backend, $streams streams, prompts of $long tokens${chunk:+, prefill-chunk $chunk}"

# 1a. the streams alone
"$loadgen" --port "$port" -c "$streams" -n "$streams" -m 512 --ignore-eos --prompt-tokens 16 \
    --id-prefix alone > "$work/alone.txt" 2>&1
p0=$(metrics "$port" | awk '/^orcd_prompt_tokens_total/ { print $NF }')
# 1b. the same while long prompts arrive one after another
"$loadgen" --port "$port" -c 1 -n 1000000 -m 1 --prompt-tokens "$long" --duration 3600 \
    --id-prefix long > "$work/long.txt" 2>&1 &
gpid=$!
sleep 0.2
"$loadgen" --port "$port" -c "$streams" -n "$streams" -m 512 --ignore-eos --prompt-tokens 16 \
    --id-prefix mixed > "$work/mixed.txt" 2>&1
kill -TERM $gpid 2>/dev/null || true; wait $gpid 2>/dev/null || true
set -- $(itl "$work/alone.txt"); a50=${1:--}; a99=${2:--}
set -- $(itl "$work/mixed.txt"); m50=${1:--}; m99=${2:--}
longs=$(awk '/^requests / { print $4 }' "$work/long.txt")
p1=$(metrics "$port" | awk '/^orcd_prompt_tokens_total/ { print $NF }')
per_long=$(awk -v a="$p0" -v b="$p1" -v n="${longs:-0}" -v s="$streams" \
    'BEGIN { if (n > 0) printf "%.0f", (b - a - s * 16) / n; else print "?" }')
printf "inter-token ms, %d streams alone:          p50 %s  p99 %s\n" "$streams" "$a50" "$a99"
printf "inter-token ms, with prompts of ~%s tokens (%s done): p50 %s  p99 %s\n" "$per_long" "${longs:-?}" "$m50" "$m99"
awk -v a="$a99" -v m="$m99" 'BEGIN { if (a > 0) printf "p99 ratio: %.2fx (target <= 2x)\n", m / a }'

# 2. cancel during a long prefill
before=$(metrics "$port" | awk '/^orcd_cancel_latency_seconds_count/ { print $NF }')
for i in $(seq 1 20); do
	"$loadgen" --port "$port" -c 1 -n 1 -m 64 --prompt-tokens "$long" --id-prefix "c$i" \
	    > /dev/null 2>&1 &
	cpid=$!
	# 20-200 ms: inside the prefill
	sleep "0.0$(( (i * 37) % 9 + 2 ))"
	post_cancel "$port" "c$i-0"
	wait $cpid 2>/dev/null || true
done
metrics "$port" > "$work/metrics.txt"
after=$(awk '/^orcd_cancel_latency_seconds_count/ { print $NF }' "$work/metrics.txt")
echo "cancels during a $long-token prefill: $((after - before)) measured (server: cancel seen -> KV freed)," \
    "p50 $(hist_q orcd_cancel_latency_seconds 0.5 < "$work/metrics.txt") ms," \
    "p95 $(hist_q orcd_cancel_latency_seconds 0.95 < "$work/metrics.txt") ms (bucket upper bounds)"
awk '/^orcd_step_seconds_(sum|count)/ { v[$1] = $NF } END { if (v["orcd_step_seconds_count"] > 0)
    printf "mean step %.2f ms over %d steps\n", v["orcd_step_seconds_sum"] / v["orcd_step_seconds_count"] * 1e3,
    v["orcd_step_seconds_count"] }' "$work/metrics.txt"
kill -TERM $spid; wait $spid 2>/dev/null || true
trap - EXIT
