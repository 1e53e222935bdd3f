# Carrying wheels to a machine without registry access, in pieces that each fit one device call.
# Sourced by prepare_gpu_wheels.sh (split + manifest) and gpu_check.sh (reassemble + verify + install).
#
# Layout of a wheels folder:
#   SHA256SUMS             "<sha256>  <file>" for every whole wheel and every part (sha256sum -c format)
#   NAME.whl               a wheel at most PART_SIZE big
#   NAME.whl.part-aa, -ab  a bigger wheel cut by `split -b PART_SIZE`; joined with `cat` in name order and
#                          checked against NAME.whl's line in SHA256SUMS before anything is installed

# split_and_manifest DIR SIZE: record every wheel's sha256 in DIR/SHA256SUMS, cut every wheel larger than SIZE
# (split's syntax, e.g. 50M) into parts, and add the parts' sha256.
split_and_manifest() {
    local dir=$1 size=$2 f limit
    limit=$(numfmt --from=iec "$size")
    (cd "$dir" && sha256sum -- *.whl > SHA256SUMS) || return 1
    for f in "$dir"/*.whl; do
        if [ "$(stat -c %s "$f")" -gt "$limit" ]; then
            split -b "$size" "$f" "$f.part-" && rm "$f" || return 1
        fi
    done
    (cd "$dir" && { ! ls -- *.part-* >/dev/null 2>&1 || sha256sum -- *.part-* >> SHA256SUMS; })
}

# assemble_wheels DIR: join split parts, then check every wheel named in SHA256SUMS. Exit status 1 with one line
# naming the file on a missing part, a bad checksum or a wheel absent from the manifest.
assemble_wheels() {
    local dir=$1 first whl name
    [ -f "$dir/SHA256SUMS" ] || { echo "wheels: $dir/SHA256SUMS missing" >&2; return 1; }
    for first in "$dir"/*.whl.part-aa; do
        [ -e "$first" ] || continue
        whl=${first%.part-aa}
        name=$(basename "$whl")
        # Parts are checked one by one first, so a part corrupted in transit is named, not just the result.
        (cd "$dir" && grep -F " $name.part-" SHA256SUMS | sha256sum --quiet -c -) \
            || { echo "wheels: a part of $name is missing or corrupt (see above)" >&2; return 1; }
        cat "$whl".part-* > "$whl.tmp" && mv "$whl.tmp" "$whl" || return 1
    done
    for whl in "$dir"/*.whl; do
        [ -e "$whl" ] || continue
        name=$(basename "$whl")
        grep -qF "  $name" "$dir/SHA256SUMS" || { echo "wheels: $name is not in SHA256SUMS" >&2; return 1; }
    done
    (cd "$dir" && grep -v '\.part-' SHA256SUMS | sha256sum --quiet -c -) \
        || { echo "wheels: checksum mismatch in $dir (see above)" >&2; return 1; }
}

# install_wheels DIR TARGET [PYTHON]: offline install of every wheel in DIR into TARGET (a --target folder, put on
# PYTHONPATH by the caller): nothing is resolved or fetched, and the image's own packages (torch) stay untouched.
install_wheels() {
    local dir=$1 target=$2 py=${3:-python3}
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --find-links "$dir" --target "$target" "$dir"/*.whl
}
