#!/bin/sh
# GPU checks, run on a machine with an NVIDIA GPU from a tree built here or
# from the bundle made by `test/gpu-checks.sh --bundle DIR` (binaries, the
# shared libraries they need that the GPU machine may lack, the test
# models).  Runs the CUDA unit tests, the golden parity on the CUDA
# backend, CPU-vs-GPU greedy agreement on generated qwen2.5-0.5b models,
# and a served smoke run; writes logs to $OUT (or ./gpu-out).
set -u
if [ "${1:-}" = "--bundle" ]; then
	# binaries xz-packed (the device tool carries at most 64 MiB), the
	# golden models, this script and bench/gpu-compare.sh
	d=$2
	rm -rf "$d/bin" "$d/lib" "$d/models"
	mkdir -p "$d/bin" "$d/lib" "$d/models"
	cp orcd orcd-mkmodel test/test_vram test/test_golden test/test_cuda_backend bench/loadgen \
	    bench/orcd-bench bench/deadline-bench test/test_seal test/test_memory test/test_serve "$d/bin/"
	[ -x test/test_cuda_ops ] && cp test/test_cuda_ops "$d/bin/"
	[ -x bench/seal-bench ] && cp bench/seal-bench "$d/bin/"
	strip "$d"/bin/*
	tar -cf - -C "$d" bin | xz -9e -T0 > "$d/bin.tar.xz"
	rm -rf "$d/bin"
	for lib in libevent_core-2.1.so.7 libevent_pthreads-2.1.so.7 libjansson.so.4 libcmocka.so.0 libgomp.so.1 libcrypto.so.3 libssl.so.3; do
		cp -L "/lib/x86_64-linux-gnu/$lib" "$d/lib/"
	done
	for f in $(sed -n 's/.*"model": *"\([^"]*\)".*/\1/p' ../shared/models/golden.jsonl | sort -u); do
		cp "../shared/models/$f" "$d/models/"
	done
	cp ../shared/models/golden.jsonl "$d/models/"
	cp "$0" bench/gpu-compare.sh bench/gpu-serve-compare.sh bench/sched-bench.sh "$d/"
	mkdir -p "$d/contrib" && cp contrib/seal-ref.py "$d/contrib/"   # test_seal runs it
	exit 0
fi
here=$(cd "$(dirname "$0")" && pwd)
[ -d "$here/bin" ] || [ ! -f "$here/bin.tar.xz" ] || python3 -c "import tarfile, sys; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$here/bin.tar.xz" "$here"
top_out=${OUT:-$PWD/gpu-out}
out=/tmp/gpu-logs
rm -rf "$out"
mkdir -p "$out" "$top_out"
export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export ORCD_TEST_MODELS="$here/models" ORCD_BIN="$here/bin/orcd"
bin=$here/bin
pass=0; fail=0
check() {
	name=$1; shift
	echo "== $name: $*"
	if "$@" > "$out/$name.log" 2>&1; then
		pass=$((pass + 1)); echo "   PASS"
	else
		fail=$((fail + 1)); echo "   FAIL (exit $?)"; tail -n 15 "$out/$name.log"
	fi
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
check vram "$bin/test_vram"
[ -x "$bin/test_cuda_ops" ] && check cuda_ops "$bin/test_cuda_ops"
check golden_cuda env ORCD_TEST_BACKEND=cuda "$bin/test_golden"
check cuda_backend "$bin/test_cuda_backend"
# the serving tests against the CUDA backend: sealed serving and the VRAM
# flip turning /health unhealthy, the 1,000 mixed requests, the SSE suite
export ORCD_BIN="$bin/orcd" ORCD_TEST_BACKEND=cuda
check seal_cuda "$bin/test_seal"
check memory_cuda "$bin/test_memory"
check serve_cuda "$bin/test_serve"
# the same over the paged KV pool (blocks of 32 positions, block tables)
export ORCD_CUDA_KV_PAGED=1
check golden_cuda_paged env ORCD_TEST_BACKEND=cuda "$bin/test_golden"
check cuda_backend_paged "$bin/test_cuda_backend"
check memory_cuda_paged "$bin/test_memory"
unset ORCD_CUDA_KV_PAGED
# the GEMV for 9..32-token batches (off by default until this passes)
ORCD_CUDA_GEMV_TOKENS=32 check cuda_ops_gemv32 "$bin/test_cuda_ops"
ORCD_CUDA_GEMV_TOKENS=32 check cuda_backend_gemv32 "$bin/test_cuda_backend"
unset ORCD_TEST_BACKEND
grep -h "mixed requests\|after 1000\|flip\|sealed" "$out/memory_cuda.log" "$out/seal_cuda.log" | head -n 8
grep -h "passed\|failed\|mismatch" "$out"/*.log | tail -n 8

# CPU vs GPU greedy on generated real-shape models
for mix in q4_k_m f16; do
	m=/tmp/qwen05-$mix.gguf
	"$bin/orcd-mkmodel" --preset qwen2.5-0.5b --quant $mix --ascii-output --quiet -o "$m"
	for be in cpu cuda; do
		"$bin/orcd" generate -m "$m" -p "Once upon a time" -n 64 --temp 0 --ids --backend $be \
		    --dump-logits "/tmp/logits-$be-$mix.txt" > "$out/greedy-$be-$mix.txt" \
		    2>"$out/greedy-$be-$mix.err"
	done
	# first-step logits: max |diff|, relative L2 error, and the top-2 gap on the CPU
	paste "/tmp/logits-cpu-$mix.txt" "/tmp/logits-cuda-$mix.txt" | awk -v mix=$mix '
	    { d = $1 - $2; if (d < 0) d = -d; if (d > md) md = d; se += d * d; sr += $1 * $1;
	      if (NR == 1 || $1 > b1) { b2 = b1; b1 = $1; i1 = NR - 1 } else if (NR == 2 || $1 > b2) b2 = $1;
	      if (NR == 1 || $2 > g1) { g1 = $2; j1 = NR - 1 } }
	    END { printf "%s: first-step logits max |cpu-gpu| %.3g, relative L2 %.3g; argmax cpu %d gpu %d; cpu top-2 gap %.4g\n", mix, md, sqrt(se / sr), i1, j1, b1 - b2 }' |
	    tee -a "$out/greedy.txt"
	awk -v mix=$mix 'NR==FNR {for (i=1;i<=NF;i++) a[i]=$i; n=NF; next}
	    {for (i=1;i<=NF && i<=n;i++) if ($i != a[i]) {printf "%s: CPU and GPU differ first at token %d (%s vs %s)\n", mix, i-1, a[i], $i; bad=1; exit}
	     if (!bad) printf "%s: CPU and GPU agree on all %d greedy tokens\n", mix, n}' \
	    "$out/greedy-cpu-$mix.txt" "$out/greedy-cuda-$mix.txt" | tee -a "$out/greedy.txt"
	tail -n 1 "$out/greedy-cuda-$mix.err"
done
for gv in 8 32; do
	printf "batch-32 decode, GEMV up to %s tokens: " $gv
	ORCD_CUDA_GEMV_TOKENS=$gv "$bin/orcd-bench" -m /tmp/qwen05-q4_k_m.gguf --backend cuda \
	    -B 32 -p 16 -n 64 -r 2 2>&1 | grep "tg64x32"
done
# served end to end on the GPU: 32 concurrent SSE streams, /health probed
m=/tmp/qwen05-q4_k_m.gguf
rm -f /tmp/orcd-gpu.ready
"$bin/orcd" serve -m "$m" --backend cuda --listen 127.0.0.1:0 --ready-file /tmp/orcd-gpu.ready \
    --log-level warn > "$out/serve.log" 2>&1 &
spid=$!
for i in $(seq 1 200); do [ -f /tmp/orcd-gpu.ready ] && break; sleep 0.1; done
port=$(sed -n 's/^port=//p' /tmp/orcd-gpu.ready)
if [ -n "$port" ]; then
	"$bin/loadgen" --port "$port" -c 32 -n 256 -m 128 --ignore-eos --health-rps 200 \
	    --prompt-tokens 128 > "$out/serve-loadgen.txt" 2>&1
	python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$port/metrics').read().decode())" \
	    > "$out/serve-metrics.txt" 2>&1
	grep -E "tokens/s|ttft|inter|health" "$out/serve-loadgen.txt" | head -n 12
	grep -E "^orcd_loop_lag_max_seconds|^orcd_requests_total" "$out/serve-metrics.txt"
	grep -i "stall" "$out/serve.log" | head -n 5
	kill -TERM $spid; wait $spid
else
	echo "serve did not start"; tail -n 5 "$out/serve.log"; kill $spid
fi
# the memory monitor's check and snapshot cost on the CUDA backend
"$bin/deadline-bench" 20000 /tmp/qwen05-q4_k_m.gguf cuda 2>&1 | tail -n 2
# seal digests in VRAM against OpenSSL (bench/seal)
[ -x "$bin/seal-bench" ] && "$bin/seal-bench" -r 5 400 4000 2>&1 | tee "$out/seal-bench.txt"
# decode with the seal re-verified beside it: served tokens/s with the
# re-verification off, every 1 s and every 0.1 s
m=/tmp/qwen05-q4_k_m.gguf
if [ -f "$m" ]; then
	umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > /tmp/seal.key; umask 022
	"$bin/orcd" seal -m "$m" --key-file /tmp/seal.key --shard-id gpu-0 -o /tmp/qwen05.seal \
	    > "$out/seal-create.log" 2>&1 || tail -n 3 "$out/seal-create.log"
	for rv in 0 1 0.1; do
		rm -f /tmp/orcd-seal.ready
		"$bin/orcd" serve -m "$m" --backend cuda --listen 127.0.0.1:0 \
		    --ready-file /tmp/orcd-seal.ready --seal /tmp/qwen05.seal \
		    --seal-key-file /tmp/seal.key --seal-reverify $rv --log-level warn \
		    --audit-log "$out/audit-$rv.log" > "$out/serve-seal-$rv.log" 2>&1 &
		spid=$!
		for i in $(seq 1 300); do [ -f /tmp/orcd-seal.ready ] && break; sleep 0.1; done
		port=$(sed -n 's/^port=//p' /tmp/orcd-seal.ready 2>/dev/null)
		if [ -n "$port" ]; then
			"$bin/loadgen" --port "$port" -c 1 -n 8 -m 256 --ignore-eos \
			    --prompt-tokens 16 > "$out/seal-decode-$rv.txt" 2>&1
			printf "seal re-verify every %s s, 1 stream: " "$rv"
			grep -E "tok/s" "$out/seal-decode-$rv.txt" | head -n 1
			python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$port/metrics').read().decode())" \
			    | grep -E "^orcd_seal_verif|^orcd_seal_verify_seconds_(sum|count)" | tr '\n' ' '; echo
			kill -TERM $spid; wait $spid
		else
			echo "sealed serve (re-verify $rv) did not start"; tail -n 5 "$out/serve-seal-$rv.log"
			kill $spid 2>/dev/null
		fi
	done
fi
echo "gpu checks: $pass passed, $fail failed"
tar -czf "$top_out/gpu-logs.tar.gz" -C /tmp gpu-logs
