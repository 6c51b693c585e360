#!/usr/bin/env bash
# Builds what gpu/check.sh runs on a GPU machine that has no Go toolchain: the transformer
# example and the test binaries (cgo, linux/amd64, stripped, gzipped), and the part of the Go
# standard library's source the transformer reads (its default corpus and the tests' strings/),
# laid out under the same GOROOT path as here so the binaries find it unchanged.
#
#	gpu/bundle.sh [DIR]    # default DIR: .gpu (ignored by git)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.gpu}
export GOTOOLCHAIN=auto GOEXPERIMENT=simd
rm -rf "$dir" && mkdir -p "$dir/bin"
flags=(-ldflags='-s -w')
go build "${flags[@]}" -o "$dir/bin/transformer" ./examples/transformer
for pkg in hooks hooks/internal/step projector transformer; do
  go test -c "${flags[@]}" -o "$dir/bin/${pkg##*/}.test" "./$pkg"
done
gzip -9 "$dir"/bin/*

# The corpus: the .go files the default transformer corpus reads (sorted paths, the first 8 MiB;
# examples/transformer -max-bytes) and strings/ (the tests' corpus).
goroot=$(go env GOROOT)
echo "$goroot" > "$dir/goroot"
( cd "$goroot/src" && find . -name '*.go' -type f | sed 's|^\./||' | LC_ALL=C sort |
    awk -v max=$((8 << 20)) 'BEGIN { total = 0 } total < max { print; cmd = "stat -c %s \"" $0 "\""; cmd | getline size; close(cmd); total += size }' > /tmp/gpu-corpus.list
  ls strings/*.go >> /tmp/gpu-corpus.list
  tar -czf - -T /tmp/gpu-corpus.list ) > "$dir/goroot-src.tar.gz"
du -sh "$dir"/bin/* "$dir/goroot-src.tar.gz"
