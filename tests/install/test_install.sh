#!/bin/bash
# test_install.sh: `meson install` into a temporary root gives a working tree: the programs
# (run), libssm's headers and ssm.pc (a tiny program built with pkg-config and run), the man
# pages, bash completion, libssm-python.so, and `pip install ./python` into a venv using it.
# Environment: SSM_BUILD (the build directory), SSM_SRC, SSM_PREFIX, SSM_LIBDIR (meson's
# prefix and libdir options), SSM_SANITIZE (b_sanitize), CC (optional).
set -u
BUILD=${SSM_BUILD:?}; SRC=${SSM_SRC:?}; PREFIX=${SSM_PREFIX:?}; LIBDIR=${SSM_LIBDIR:?}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0 passes=0
ok() { passes=$((passes + 1)); echo "ok   $1"; }
bad() { fails=$((fails + 1)); echo "FAIL $1"; [ -f "$T/err" ] && sed 's/^/     | /' "$T/err" | tail -5; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }

cd "$T"
R=$T/root
case $LIBDIR in /*) lib=$R$LIBDIR ;; *) lib=$R$PREFIX/$LIBDIR ;; esac
meson install -C "$BUILD" --no-rebuild --quiet --destdir "$R" > out 2> err
check "meson install --destdir" '[ $? -eq 0 ]'
export LD_LIBRARY_PATH=$lib
for p in ssm-train ssm-score ssm-generate ssm-embed; do
    check "$p installed and runs" '"$R$PREFIX/bin/$p" --version > out 2> err && grep -q "^$p " out'
    check "$p.1 man page" 'grep -q "^\.TH $(echo $p | tr a-z A-Z) " "$R$PREFIX/share/man/man1/$p.1"'
    check "$p bash completion" 'bash -c "source \"$R$PREFIX/share/bash-completion/completions/$p\" && complete -p $p" > out 2> err'
done
words=$(PATH="$R$PREFIX/bin:$PATH" bash -c 'source "$1"; COMP_WORDS=(ssm-score --pl); COMP_CWORD=1; _ssm_complete; echo "${COMPREPLY[*]}"' _ "$R$PREFIX/share/bash-completion/completions/ssm-score")
check "completion of ssm-score --pl is --plot (from its --help)" '[ "$words" = --plot ]'
check "headers and ssm.pc" '[ -f "$R$PREFIX/include/ssm/ssm.h" ] && [ -f "$lib/pkgconfig/ssm.pc" ]'

# a program built against the installed tree, found through pkg-config only
# the .pc names the final prefix: the sysroot maps it into the temporary root
export PKG_CONFIG_PATH=$lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$R
flags=()
[ "${SSM_SANITIZE:-none}" != none ] && flags=(-fsanitize="$SSM_SANITIZE")
${CC:-cc} "${flags[@]}" "$SRC/tests/install/tiny.c" -o tiny $(pkg-config --cflags --libs ssm) -lm 2> err
check "cc tiny.c \$(pkg-config --cflags --libs ssm)" '[ $? -eq 0 ]'
./tiny > out 2> err
check "and it runs" '[ $? -eq 0 ] && grep -q "^libssm .*parameters, loss [0-9.]*$" out'

# the Python module: pip install ./python into a venv, over the installed library
if [ "${SSM_SANITIZE:-none}" != none ]; then
    ok "pip install ./python (SKIPPED under the sanitizers: python is not instrumented)"
elif ! /usr/bin/env python3 -c "import numpy, venv" 2> /dev/null && ! /usr/bin/python3 -c "import numpy, venv" 2> /dev/null; then
    ok "pip install ./python (SKIPPED: no python3 with numpy and venv; Debian: python3-numpy python3-venv)"
else
    py=$(command -v python3); "$py" -c "import numpy" 2> /dev/null || py=/usr/bin/python3
    cp -r "$SRC/python" pysrc  # pip builds in the tree: not in the source's
    "$py" -m venv --system-site-packages venv > out 2> err &&
        venv/bin/python -m pip install --no-build-isolation --no-index ./pysrc > out 2> err
    check "pip install --no-build-isolation --no-index ./python (in a venv)" '[ $? -eq 0 ]'
    cd /  # not beside pysrc/ssm
    SSM_LIBRARY=$lib/libssm-python.so "$T/venv/bin/python" -c "import ssm, os; assert ssm.__file__.startswith('$T/venv'), ssm.__file__; print(ssm.__version__)" > "$T/out" 2> "$T/err"
    check "import ssm from the venv, with the installed libssm-python.so" '[ $? -eq 0 ] && grep -q "^0\." "$T/out"'
    cd "$T"
fi

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
