#!/bin/sh
# bench/gpu-serve-compare.sh: many SSE streams on one GPU, orcd serve against
# llama-server, in one command.  On the same GGUF (qwen2.5-0.5b q4_k_m from
# orcd-mkmodel --ascii-output, so llama-server's streams stay valid UTF-8)
# and the same context per slot, bench/loadgen drives each server with 1, 8,
# 32, 64 and 128 concurrent streams (prompt about 128 tokens, 128 generated,
# greedy, end-of-sequence ignored); llama-batched-bench on the same file is
# the no-HTTP ceiling.  Prints aggregate tokens/s, TTFT p50/p99 and
# inter-token p50/p99 for both servers and orcd's ratios.
#
# usage: bench/gpu-serve-compare.sh [-c "1 8 32 64 128"] [-n REQS_PER_STREAM]
#            [--preset NAME] [--llama-bin DIR] [--bin DIR] [--work DIR]
#   llama.cpp is built from ../shared/peers/llama.cpp-*.tar.xz (or $PEERS)
#   with CUDA for sm_90 unless --llama-bin names a folder holding
#   llama-server and llama-batched-bench; orcd's binaries come from the
#   build tree (or --bin DIR holding orcd, orcd-mkmodel and loadgen).
set -eu
concs="1 8 32 64 128"
per=4
preset=qwen2.5-0.5b
llama_bin=""
top=$(cd "$(dirname "$0")/.." && pwd)
bin=""
work=${TMPDIR:-/tmp}/orcd-gpu-serve-compare
ctx=512            # positions per slot: 128 prompt + 128 generated, with room
gen=128
while [ $# -gt 0 ]; do
	case "$1" in
	-c) concs=$2; shift 2 ;;
	-n) per=$2; shift 2 ;;
	--preset) preset=$2; shift 2 ;;
	--llama-bin) llama_bin=$2; shift 2 ;;
	--bin) bin=$2; shift 2 ;;
	--work) work=$2; shift 2 ;;
	*) echo "usage: $0 [-c LIST] [-n N] [--preset NAME] [--llama-bin DIR] [--bin DIR] [--work DIR]" >&2
	   exit 2 ;;
	esac
done
if [ -n "$bin" ]; then
	orcd=$bin/orcd; mkmodel=$bin/orcd-mkmodel; loadgen=$bin/loadgen
else
	orcd=$top/orcd; mkmodel=$top/orcd-mkmodel; loadgen=$top/bench/loadgen
fi
for p in "$orcd" "$mkmodel" "$loadgen"; do
	[ -x "$p" ] || { echo "gpu-serve-compare: $p is missing (make bench, or --bin DIR)" >&2; exit 1; }
done
command -v nvidia-smi >/dev/null || { echo "gpu-serve-compare: no NVIDIA GPU here" >&2; exit 1; }
mkdir -p "$work"

if [ -z "$llama_bin" ]; then
	peers=${PEERS:-$top/../shared/peers}
	tarball=$(ls "$peers"/llama.cpp-*.tar.xz 2>/dev/null | head -n 1)
	[ -n "$tarball" ] || { echo "gpu-serve-compare: no llama.cpp tarball in $peers" >&2; exit 1; }
	src=$work/llama.cpp
	if [ ! -x "$src/build/bin/llama-server" ]; then
		echo "== building llama.cpp ($(basename "$tarball")) with CUDA for sm_90 (minutes)"
		rm -rf "$src"
		tar -xJf "$tarball" -C "$work"
		g=""; command -v ninja >/dev/null && g="-G Ninja"
		# shellcheck disable=SC2086
		cmake -S "$src" -B "$src/build" $g -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
		    -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=ON -DGGML_CUDA_NCCL=OFF \
		    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
		    -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF > "$work/llama-cmake.log" 2>&1 ||
		    { tail -n 20 "$work/llama-cmake.log"; exit 1; }
		cmake --build "$src/build" -j "$(nproc)" --target llama-server llama-batched-bench \
		    > "$work/llama-build.log" 2>&1 || { tail -n 20 "$work/llama-build.log"; exit 1; }
	fi
	llama_bin=$src/build/bin
fi

model=$work/$preset-q4_k_m-ascii.gguf
[ -f "$model" ] || "$mkmodel" --preset "$preset" --quant q4_k_m --ascii-output --quiet -o "$model"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
maxc=0
for c in $concs; do [ "$c" -gt "$maxc" ] && maxc=$c; done

# one loadgen run: prints "tok/s ttft_p50 ttft_p99 itl_p50 itl_p99"
drive() {
	api=$1 port=$2 c=$3 log=$4
	"$loadgen" --api "$api" --port "$port" -c "$c" -n $((c * per)) -m "$gen" \
	    --prompt-tokens 128 --temperature 0 --ignore-eos --timeout 300 > "$log" 2>&1 || true
	awk '/^tokens / { for (i = 1; i <= NF; i++) if ($i == "tok/s") tps = $(i - 1) }
	     /^ttft / { t50 = $4; t99 = $7 }
	     /^inter-token / { i50 = $4; i99 = $7 }
	     END { printf "%s %s %s %s %s\n", tps ? tps : "-", t50 ? t50 : "-", t99 ? t99 : "-",
	           i50 ? i50 : "-", i99 ? i99 : "-" }' "$log"
}

# waits for GET /health to answer 200: $1 pid, $2 port
wait_health() {
	for i in $(seq 1 600); do
		kill -0 "$1" 2>/dev/null || return 1
		python3 -c "import urllib.request, sys; urllib.request.urlopen('http://127.0.0.1:$2/health', timeout=1)" \
		    2>/dev/null && return 0
		sleep 0.2
	done
	return 1
}

# llama-server: its best configuration (the issue's), -np = the largest
# concurrency, the same context per slot
lport=18081
"$llama_bin/llama-server" -m "$model" -ngl 99 -np "$maxc" -c $((ctx * maxc)) -fa on -bs \
    --cache-ram 0 --no-cache-idle-slots --host 127.0.0.1 --port $lport \
    > "$work/llama-server.log" 2>&1 &
lpid=$!
if ! wait_health $lpid $lport; then
	echo "llama-server did not start:"; tail -n 20 "$work/llama-server.log"; kill $lpid 2>/dev/null; exit 1
fi
for c in $concs; do
	echo "llama $c $(drive openai $lport "$c" "$work/loadgen-llama-$c.txt")" >> "$work/results"
done
kill $lpid; wait $lpid 2>/dev/null || true

# orcd serve with the CUDA backend: max-batch = the largest concurrency
rm -f "$work/orcd.ready"
"$orcd" serve -m "$model" --backend cuda --listen 127.0.0.1:0 --ready-file "$work/orcd.ready" \
    --max-batch "$maxc" --ctx-size $ctx --max-queue 100000 --log-level warn \
    > "$work/orcd.log" 2>&1 &
opid=$!
for i in $(seq 1 600); do [ -f "$work/orcd.ready" ] && break; sleep 0.2; done
oport=$(sed -n 's/^port=//p' "$work/orcd.ready" 2>/dev/null || true)
if [ -z "$oport" ]; then
	echo "orcd serve did not start:"; tail -n 20 "$work/orcd.log"; kill $opid 2>/dev/null; exit 1
fi
for c in $concs; do
	echo "orcd $c $(drive orcd "$oport" "$c" "$work/loadgen-orcd-$c.txt")" >> "$work/results"
done
kill -TERM $opid; wait $opid 2>/dev/null || true

# the no-HTTP ceiling
"$llama_bin/llama-batched-bench" -m "$model" -ngl 99 -fa on -c $((ctx * maxc)) -npp 128 \
    -ntg $gen -npl "$(echo $concs | tr ' ' ',')" > "$work/batched-bench.txt" 2>&1 || true
# its table: | PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | T s | S t/s |
awk -F'|' 'NF > 10 && $4 + 0 > 0 { gsub(/ /, "", $4); gsub(/ /, "", $9); print "batched", $4, $9 }' \
    "$work/batched-bench.txt" >> "$work/results"

printf "\n%-6s | %-36s | %-36s | %-9s | %s\n" "" "llama-server: tok/s  ttft p50/p99  itl p50/p99 (ms)" \
    "orcd serve: tok/s  ttft p50/p99  itl p50/p99 (ms)" "batched" "orcd/llama-server, orcd/batched"
for c in $concs; do
	l=$(awk -v c="$c" '$1 == "llama" && $2 == c { print $3, $4, $5, $6, $7 }' "$work/results")
	o=$(awk -v c="$c" '$1 == "orcd" && $2 == c { print $3, $4, $5, $6, $7 }' "$work/results")
	b=$(awk -v c="$c" '$1 == "batched" && $2 == c { print $3 }' "$work/results")
	echo "$c|$l|$o|${b:--}" | awk -F'|' '{
	    split($2, l, " "); split($3, o, " ");
	    r1 = (l[1] + 0 > 0) ? sprintf("%.2fx", o[1] / l[1]) : "-";
	    r2 = ($4 + 0 > 0) ? sprintf("%.2fx", o[1] / $4) : "-";
	    printf "%-6s | %8s %7s/%-8s %6s/%-7s | %8s %7s/%-8s %6s/%-7s | %9s | %s, %s\n",
	        $1, l[1], l[2], l[3], l[4], l[5], o[1], o[2], o[3], o[4], o[5], $4, r1, r2 }'
done
echo "(logs in $work)"
