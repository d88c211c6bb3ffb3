#!/bin/sh
# bench/gpu-compare.sh: orcd's CUDA backend against llama.cpp on this GPU,
# in one command.  For each model shape (qwen2.5-0.5b and qwen2.5-7b,
# q4_k_m, random weights from orcd-mkmodel, which llama.cpp also loads):
# llama-bench -p 512 -n 128 -ngl 99 with flash attention off and on, and
# orcd-bench on the same file; prints prefill (pp512) and decode (tg128)
# tokens/s of both and orcd's ratio to llama.cpp's better run.
#
# usage: bench/gpu-compare.sh [-r REPS] [--presets "qwen2.5-0.5b qwen2.5-7b"]
#                             [--llama-bench PATH] [--bin DIR] [--work DIR]
#   llama.cpp is built from ../shared/peers/llama.cpp-*.tar.xz (or $PEERS)
#   with CUDA for sm_90 unless --llama-bench names a built llama-bench;
#   orcd's binaries come from the build tree (or --bin DIR holding
#   orcd-mkmodel and orcd-bench).
set -eu
reps=5
presets="qwen2.5-0.5b qwen2.5-7b"
llama_bench=""
top=$(cd "$(dirname "$0")/.." && pwd)
bin=""
work=${TMPDIR:-/tmp}/orcd-gpu-compare
while [ $# -gt 0 ]; do
	case "$1" in
	-r) reps=$2; shift 2 ;;
	--presets) presets=$2; shift 2 ;;
	--llama-bench) llama_bench=$2; shift 2 ;;
	--bin) bin=$2; shift 2 ;;
	--work) work=$2; shift 2 ;;
	*) echo "usage: $0 [-r REPS] [--presets LIST] [--llama-bench PATH] [--bin DIR] [--work DIR]" >&2
	   exit 2 ;;
	esac
done
if [ -n "$bin" ]; then
	mkmodel=$bin/orcd-mkmodel; obench=$bin/orcd-bench
else
	mkmodel=$top/orcd-mkmodel; obench=$top/bench/orcd-bench
fi
for p in "$mkmodel" "$obench"; do
	[ -x "$p" ] || { echo "gpu-compare: $p is missing (make bench, or --bin DIR)" >&2; exit 1; }
done
command -v nvidia-smi >/dev/null || { echo "gpu-compare: no NVIDIA GPU here (nvidia-smi missing)" >&2; exit 1; }
mkdir -p "$work"

if [ -z "$llama_bench" ]; then
	peers=${PEERS:-$top/../shared/peers}
	tarball=$(ls "$peers"/llama.cpp-*.tar.xz 2>/dev/null | head -n 1)
	[ -n "$tarball" ] || { echo "gpu-compare: no llama.cpp tarball in $peers (set PEERS)" >&2; exit 1; }
	src=$work/llama.cpp
	if [ ! -x "$src/build/bin/llama-bench" ]; then
		echo "== building llama.cpp ($(basename "$tarball")) with CUDA for sm_90 (minutes)"
		rm -rf "$src"
		tar -xJf "$tarball" -C "$work"
		gen=""; command -v ninja >/dev/null && gen="-G Ninja"
		# shellcheck disable=SC2086
		cmake -S "$src" -B "$src/build" $gen -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
		    -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=ON -DGGML_CUDA_NCCL=OFF \
		    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
		    -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF > "$work/llama-cmake.log" 2>&1 ||
		    { tail -n 20 "$work/llama-cmake.log"; exit 1; }
		cmake --build "$src/build" -j "$(nproc)" --target llama-bench \
		    > "$work/llama-build.log" 2>&1 || { tail -n 20 "$work/llama-build.log"; exit 1; }
	fi
	llama_bench=$src/build/bin/llama-bench
fi

echo "== GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"
echo "== llama.cpp: $llama_bench; orcd: $obench; $reps repetitions each"
summary=""
for preset in $presets; do
	m=$work/$preset-q4_k_m.gguf
	if [ ! -f "$m" ]; then
		echo "== generating $preset q4_k_m"
		"$mkmodel" --preset "$preset" --quant q4_k_m --ascii-output --quiet -o "$m"
	fi
	echo "== $preset q4_k_m ($(du -h "$m" | cut -f1))"
	lout=$("$llama_bench" -m "$m" -p 512 -n 128 -ngl 99 -fa 0,1 -r "$reps" -o csv 2>"$work/llama-$preset.err") ||
	    { tail -n 20 "$work/llama-$preset.err"; exit 1; }
	# columns by name: flash_attn, n_prompt, n_gen, avg_ts
	lres=$(echo "$lout" | awk -F, 'NR==1 {for (i=1;i<=NF;i++) {gsub(/"/,"",$i); h[$i]=i}; next}
	    {gsub(/"/,""); t = $h["n_prompt"] > 0 ? "pp" $h["n_prompt"] : "tg" $h["n_gen"];
	     print t, $h["flash_attn"], $h["avg_ts"], $h["stddev_ts"]}')
	echo "$lres" | awk '{printf "llama.cpp %s fa=%s: %.2f +- %.2f tok/s\n", $1, $2, $3, $4}'
	oout=$("$obench" --backend cuda -m "$m" -p 512 -n 128 -r "$reps")
	echo "$oout"
	for t in pp512 tg128; do
		o=$(echo "$oout" | awk -v t="$t" '$2 == t {print $(NF-3)}')
		l=$(echo "$lres" | awk -v t="$t" '$1 == t && $3 > b {b = $3} END {print b}')
		line=$(awk -v p="$preset" -v t="$t" -v o="$o" -v l="$l" \
		    'BEGIN {printf "%-13s %-6s orcd %10.2f tok/s  llama.cpp (best fa) %10.2f tok/s  ratio %.3fx", p, t, o, l, o / l}')
		summary="$summary$line
"
	done
done
echo "== result"
printf "%s" "$summary"
