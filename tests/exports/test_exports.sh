#!/usr/bin/env bash
# test_exports.sh: libssm.so exports its public API and nothing else.
#
# The public API is the functions that the installed headers (install_headers in
# libssm/meson.build) declare with SSM_API. Every dynamic symbol that libssm.so defines must be
# one of them (an `ssm_` name declared there), apart from the linker's own (_init, _fini,
# _edata, _end, __bss_start); and every function they declare must be defined by libssm.so
# (a header declares only what its own library defines).
#
# Environment: SSM_LIB (the built libssm.so), SSM_SRC (the source root), NM (optional).
set -u
lib=${SSM_LIB:?set SSM_LIB to the built libssm.so}
src=${SSM_SRC:?set SSM_SRC to the source root}
nm=${NM:-nm}

headers=$(sed -n '/install_headers(/,/)/p' "$src/libssm/meson.build" |
          grep -o "include/ssm/[A-Za-z0-9_]*\.h" | sed "s|^|$src/libssm/|")
if [ -z "$headers" ]; then
    echo "test_exports: no installed headers found in $src/libssm/meson.build"
    exit 1
fi
echo "installed headers:" $(for h in $headers; do basename "$h"; done)

# Functions declared with SSM_API, comments and preprocessor lines left out (declarations may
# span lines: the name is the identifier just before the first '(').
declared=$(perl -0777 -pe 's{/\*.*?\*/}{ }gs; s/^[ \t]*#.*$//mg' $headers | tr '\n' ' ' |
           grep -o 'SSM_API[^(;]*(' |
           sed -E 's/.*[^A-Za-z0-9_]([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*\($/\1/' | sort -u)

syms=$("$nm" -D --defined-only "$lib") || { echo "test_exports: $nm failed on $lib"; exit 1; }
exported=$(printf '%s\n' "$syms" | awk 'NF >= 3 { print $3 } NF == 2 { print $2 }' |
           sed 's/@.*//' | sort -u)

fail=0
unexpected=()
for s in $exported; do
    case "$s" in
        _init|_fini|_edata|_end|__bss_start) continue ;;
    esac
    if [[ $s == ssm_* ]] && grep -qx "$s" <<<"$declared"; then
        continue
    fi
    unexpected+=("$s")
done
if [ ${#unexpected[@]} -gt 0 ]; then
    fail=1
    echo "FAIL libssm.so exports ${#unexpected[@]} symbols that are not public API" \
         "(an ssm_ function declared with SSM_API in an installed header):"
    for s in "${unexpected[@]}"; do
        printf '    %s\n' "$(printf '%s\n' "$syms" | awk -v s="$s" '{n = $NF; sub(/@.*/, "", n)} n == s' | head -1)"
    done
else
    echo "ok   every exported symbol is public API"
fi

missing=()
for d in $declared; do
    grep -qx "$d" <<<"$exported" || missing+=("$d")
done
if [ ${#missing[@]} -gt 0 ]; then
    fail=1
    echo "FAIL ${#missing[@]} functions declared in the installed headers are not exported by libssm.so:"
    printf '    %s\n' "${missing[@]}"
else
    echo "ok   every function of the installed headers ($(wc -w <<<"$declared")) is exported"
fi
exit $fail
