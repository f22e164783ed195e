#!/usr/bin/env bash
# The GPU check: llama.cpp built with CUDA, edge-run's tests with the model offloaded, and
# bench/bench.py against llama-server built from the same source, in the same run.
#
#   bash packaging/gpu_check.sh all        # on any Linux machine with an NVIDIA GPU, nvcc, CMake and
#                                          # network: fetch, build, test, bench (results in $OUT)
#
# The lent GPU machine of this project has no network and takes 64 MiB of files per call, so there
# the work is split: `pack` runs here and writes what travels under .gpu/ (ignored by git), in parts
# of at most 60 MiB, one part per call; each call stashes its part under /tmp/edge-run-gpu, where the
# parts and the build stay between calls while the machine is held (.gpu/ itself does not).
#
#   bash packaging/gpu_check.sh pack       # here: the CUDA build (if built here), sources, wheels, model parts
#   bash packaging/gpu_check.sh setup      # call 1 (carry .gpu/part1): unpack or build llama.cpp with CUDA
#   bash packaging/gpu_check.sh receive    # a call for each further part but the last (carry .gpu/partN)
#   bash packaging/gpu_check.sh bench      # the call with the last part: install, bench against llama-server
#   bash packaging/gpu_check.sh test       # then: the tests, fully offloaded, and the CUDA binary
#
# Environment: OUT (results folder, default ./build/gpu-check), LLAMA_SRC (a llama.cpp source tree for
# `all`/`pack`), CUDA_BUILD (the CMake build folder, default /tmp/cudabuild), BENCH_ROUNDS (default 3),
# BENCH_CONCURRENCY (default "1 4 16 64"), BENCH_TOKENS (default 128), EXPECT_GPU=0 (a dry run on a CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/build/gpu-check}
CUDA_BUILD=${CUDA_BUILD:-/tmp/cudabuild}
WORK=/tmp/edge-run-gpu
MODEL_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
LLAMA_VERSION=0.3.36
mkdir -p "$OUT" "$WORK"
# what a call carries under .gpu/ does not stay in the checkout for the next call: keep it here
GPU=$WORK/gpu
if [ "${1:-}" != pack ] && [ -d .gpu ]; then mkdir -p "$GPU" && cp -a .gpu/. "$GPU/"; fi

log() { printf '\n== %s  [%ss]\n' "$*" "$SECONDS" | tee -a "$OUT/steps.log"; }

# CMake flags: CUDA for Hopper (sm_90), shared libraries (libllama.so is what llama-cpp-python
# loads), CPU code for any x86-64 with AVX2 (the build may run on another machine than it was made).
cmake_flags() {
    echo -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" \
        -DBUILD_SHARED_LIBS=on -DGGML_NATIVE=off -DGGML_AVX2=on -DGGML_FMA=on -DGGML_F16C=on -DGGML_BMI2=on \
        -DLLAMA_OPENSSL=off -DLLAMA_BUILD_TESTS=off -DLLAMA_BUILD_EXAMPLES=off -DGGML_CUDA_NCCL=off \
        -DLLAMA_BUILD_UI=off -DLLAMA_USE_PREBUILT_UI=off
}

build_llama() {  # $1: llama.cpp source tree
    log "cmake build of $1 into $CUDA_BUILD ($(nproc) cores)"
    # shellcheck disable=SC2046
    cmake -S "$1" -B "$CUDA_BUILD" $(cmake_flags) > "$OUT/cmake-configure.log" 2>&1
    cmake --build "$CUDA_BUILD" --target llama-server llama -j "$(nproc)" > "$OUT/cmake-build.log" 2>&1 \
        || { tail -50 "$OUT/cmake-build.log"; exit 1; }
}

llama_source() {  # the llama.cpp that llama-cpp-python vendors, from its sdist
    if [ -n "${LLAMA_SRC:-}" ]; then echo "$LLAMA_SRC"; return; fi
    if [ ! -d "$WORK/llama_cpp_python-$LLAMA_VERSION" ]; then
        python3 -m pip download -q --no-deps --no-binary :all: -d "$WORK" "llama-cpp-python==$LLAMA_VERSION"
        tar -xzf "$WORK/llama_cpp_python-$LLAMA_VERSION.tar.gz" -C "$WORK"
    fi
    echo "$WORK/llama_cpp_python-$LLAMA_VERSION/vendor/llama.cpp"
}

cuda_lib_dirs() {  # where the CUDA runtime and cuBLAS live on this machine
    find /usr/local /opt /usr/lib \( -name 'libcublas.so.*' -o -name 'libcudart.so.*' -o -name 'libcuda.so.1' \) -print 2>/dev/null \
        | xargs -r -n1 dirname | sort -u | paste -sd:
}

cuda_env() {
    export LD_LIBRARY_PATH=$CUDA_BUILD/bin:$(cuda_lib_dirs)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
}

python_env() {
    export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
}

install_python() {
    # edge-run's dependencies as wheels (the GPU machine has no package index), then llama-cpp-python's
    # Python files with the CUDA build's libraries in its lib/ folder, then edge-run itself (editable)
    log "python packages"
    local site=$WORK/site
    rm -rf "$site" && mkdir -p "$site"
    if [ -d $GPU/part2/wheels ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" $GPU/part2/wheels/*.whl
        tar -xJf $GPU/part2/llama_cpp_py.tar.xz -C "$site"
    else
        python3 -m pip install -q --target "$site" 'litestar>=2.24,<3' msgspec platformdirs uvicorn jinja2 openai \
            pytest httpx pyinstaller
        cp -a "$(llama_source)/../../llama_cpp" "$site/"
    fi
    rm -rf "$site/llama_cpp/lib" && mkdir -p "$site/llama_cpp/lib"
    cp -a "$CUDA_BUILD"/bin/lib*.so* "$site/llama_cpp/lib/"
    python_env
    python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . > "$OUT/pip-edge-run.log" 2>&1 \
        || true  # a setuptools too old for an editable install: run from the checkout, edge_run imports from it
    python3 -c "from edge_run.engine import gpu_devices; print(gpu_devices())" | tee -a "$OUT/steps.log"
}

test_model() {
    local cache=$WORK/test-cache
    mkdir -p "$cache"
    if [ -f "$cache/$MODEL_FILE" ]; then
        :
    elif [ -f $GPU/part1/model.part1 ]; then
        cat $GPU/part*/model.part* > "$cache/$MODEL_FILE"  # part1, part2... (never past 9 parts)
    elif [ -f "${EDGE_RUN_TEST_CACHE:-$HOME/.cache/edge-run-tests}/$MODEL_FILE" ]; then
        cp "${EDGE_RUN_TEST_CACHE:-$HOME/.cache/edge-run-tests}/$MODEL_FILE" "$cache/"
    fi
    if [ -f "$cache/$MODEL_FILE" ]; then
        echo "$MODEL_SHA  $cache/$MODEL_FILE" | sha256sum -c - > /dev/null
    fi
    export EDGE_RUN_TEST_CACHE=$cache  # fetched there by the tests' own fixture if still missing
}

run_tests() {
    log "tests, every model fully offloaded (EDGE_RUN_TEST_EXPECT_GPU=1)"
    # the browser, Node.js and one-file binary tests need tools the GPU machine lacks
    EDGE_RUN_TEST_EXPECT_GPU=${EXPECT_GPU:-1} timeout "${TEST_TIMEOUT:-300}" python3 -m pytest -v -p no:cacheprovider \
        -o addopts="" -rfEs --junitxml="$OUT/tests.xml" tests/unit tests/integration \
        --ignore tests/integration/test_web.py --ignore tests/integration/test_node_sdk.py \
        --ignore tests/integration/test_binary.py \
        --deselect tests/integration/test_cli.py::test_first_serve_fetches_the_default_model_and_prints_a_working_key \
        > "$OUT/tests.log" 2>&1 || true  # (that one fetches the model from the package index)
    tail -25 "$OUT/tests.log"
}

run_bench() {
    local model=$EDGE_RUN_TEST_CACHE/$MODEL_FILE ctx=2048 conc=${BENCH_CONCURRENCY:-1 4 16 64}
    local slots=${conc##* }
    log "llama-server (CUDA, -np $slots) and bench/bench.py"
    "$CUDA_BUILD/bin/llama-server" -m "$model" --alias smollm2 --host 127.0.0.1 --port 18555 -np $slots \
        -c $((slots * ctx)) -ngl 999 -t 8 --no-webui > "$OUT/llama-server.log" 2>&1 &
    local server=$!
    for _ in $(seq 300); do curl -sf http://127.0.0.1:18555/health > /dev/null && break; sleep 0.2; done
    nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm --format=csv | tee -a "$OUT/steps.log"
    timeout "${BENCH_TIMEOUT:-330}" python3 bench/bench.py --model "$model" --threads 8 --ctx $ctx \
        --concurrency $conc --max-tokens "${BENCH_TOKENS:-128}" --rounds "${BENCH_ROUNDS:-3}" --client-procs 4 --prompt-words 1400 \
        --compare http://127.0.0.1:18555/v1 --compare-model smollm2 2>&1 | tee "$OUT/bench.txt" || true
    kill $server; wait $server 2> /dev/null || true
}

build_binary() {
    log "one-file CUDA binary (packaging/build.py on the CUDA install)"
    timeout "${BINARY_TIMEOUT:-150}" python3 packaging/build.py --dist "$WORK/dist" --work "$WORK/pyi" \
        > "$OUT/binary.log" 2>&1 || echo "binary build failed or timed out (see binary.log)"
    tail -3 "$OUT/binary.log"
}

gpu_info() {
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
    nvcc --version | tail -1 | tee -a "$OUT/gpu.txt"
}

case "${1:-}" in
    pack)
        # run here, on the CPU machine: what the calls carry, in parts of at most 60 MiB (the model fills
        # what the other files leave): part1 the llama.cpp build (or its source), part2 the Python packages
        rm -rf .gpu && mkdir -p .gpu/part1 .gpu/part2/wheels
        if [ -f "$CUDA_BUILD/bin/libggml-cuda.so" ]; then
            tar -cJf .gpu/part1/cuda-build.tar.xz -C / "${CUDA_BUILD#/}/bin"
        else
            src=$(llama_source)
            tar -cJf .gpu/part1/llama-src.tar.xz -C "$(dirname "$src")" --exclude=.git --exclude=models \
                --exclude=docs --exclude=examples --exclude=tests --exclude=media --exclude=gguf-py \
                --exclude=scripts --exclude=tools/server/webui --exclude=benches "$(basename "$src")"
        fi
        # edge-run's dependencies that the GPU machine's image lacks, as Python 3.12 wheels, at the
        # versions of this checkout's .venv
        wheels=$(.venv/bin/python -m pip list --format=freeze 2>/dev/null | grep -iE \
            '^(litestar|litestar-htmx|msgspec|multipart|polyfactory|faker|rich-click|openai|httpx2|httpcore2|jiter|pydantic|pydantic_core|annotated-types|typing-inspection|uvicorn|platformdirs|sniffio|truststore|diskcache)==')
        # shellcheck disable=SC2086
        .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d .gpu/part2/wheels $wheels altgraph pyinstaller pyinstaller-hooks-contrib 2>&1 | grep -v WARNING || true
        tar -cJf .gpu/part2/llama_cpp_py.tar.xz -C "$(llama_source)/../.." --exclude=server llama_cpp
        model=${EDGE_RUN_TEST_CACHE:-$HOME/.cache/edge-run-tests}/$MODEL_FILE
        size=$(stat -c %s "$model") offset=0 n=1
        while [ "$offset" -lt "$size" ]; do
            mkdir -p ".gpu/part$n"
            room=$((60 * 1024 * 1024 - $(du -cb ".gpu/part$n" | tail -1 | cut -f1)))
            dd if="$model" of=".gpu/part$n/model.part$n" bs=1M iflag=skip_bytes,count_bytes skip="$offset" \
                count="$room" status=none
            offset=$((offset + $(stat -c %s ".gpu/part$n/model.part$n"))) n=$((n + 1))
        done
        du -sh .gpu/part*
        ;;
    receive)  # a call that only carries a part
        ls -la $GPU/part*
        ;;
    setup)
        gpu_info
        if [ -f $GPU/part1/cuda-build.tar.xz ]; then
            log "unpacking the CUDA build made on the CPU machine"
            tar -xJf $GPU/part1/cuda-build.tar.xz -C /
        else
            tar -xJf $GPU/part1/llama-src.tar.xz -C "$WORK"
            build_llama "$WORK/llama.cpp"
        fi
        cuda_env
        "$CUDA_BUILD/bin/llama-server" --version 2>&1 | tail -3 || { ldd "$CUDA_BUILD/bin/libggml-cuda.so"; exit 1; }
        log "setup done"
        ;;
    bench)
        cuda_env
        test_model
        install_python
        run_bench
        log "bench done"
        ;;
    test)
        cuda_env
        test_model
        python_env
        run_tests
        build_binary
        log "tests done"
        ;;
    all)
        gpu_info
        build_llama "$(llama_source)"
        cuda_env
        test_model
        install_python
        run_bench
        run_tests
        build_binary
        log "done"
        ;;
    *)
        sed -n 2,21p "$0"
        exit 2
        ;;
esac
