# Activate the LSST stack: `source /opt/lsst/software/stack/loadLSST.bash`, then `setup lsst_distrib`.
#
# EUPS itself is not on PyPI, so this is a small EUPS-like shim with the commands people use:
#   setup lsst_distrib      put the stack's LSST packages on PYTHONPATH and PATH
#   unsetup lsst_distrib    take them off again
#   setup -r DIR            put a package under development (DIR/python, DIR/bin) in front
#   unsetup NAME            take a package set up with -r off again
#   eups list -s            list what is set up
# A product is set up when SETUP_<NAME> is exported, with <NAME>_DIR its directory.

export LSST_STACK_DIR=/opt/lsst/software/stack
export LSST_HOME=$LSST_STACK_DIR
export LSST_DISTRIB_PREFIX=$LSST_STACK_DIR/lsst_distrib

_stackhub_path_add() { # VAR DIR: put DIR first in the colon list VAR (once)
  local var=$1 dir=$2 cur
  _stackhub_path_del "$var" "$dir"
  cur=${!var}
  export "$var=$dir${cur:+:$cur}"
}

_stackhub_path_del() { # VAR DIR: remove DIR from the colon list VAR
  local var=$1 dir=$2 out="" part
  local IFS=:
  for part in ${!var}; do
    [ "$part" = "$dir" ] || [ -z "$part" ] || out=${out:+$out:}$part
  done
  if [ -n "$out" ]; then export "$var=$out"; else unset "$var"; fi
}

_stackhub_upper() { printf '%s' "$1" | tr 'a-z.-' 'A-Z__'; }

_stackhub_lsst_site() {
  local d
  for d in "$LSST_DISTRIB_PREFIX"/lib/python3*/site-packages; do printf '%s' "$d"; return; done
}

setup() {
  local root="" name dir upper table
  while [ $# -gt 0 ]; do
    case $1 in
      -r) root=$2; shift 2 ;;
      -r*) root=${1#-r}; shift ;;
      -j|-k|-q|-v) shift ;;                # accepted for compatibility, no effect here
      -t) shift 2 ;;
      -*) echo "setup: unknown option $1" >&2; return 2 ;;
      *) name=$1; shift ;;
    esac
  done
  if [ -n "$root" ]; then
    dir=$(cd "$root" 2>/dev/null && pwd) || { echo "setup: no such directory: $root" >&2; return 1; }
    if [ -z "${name:-}" ]; then
      for table in "$dir"/ups/*.table; do
        [ -f "$table" ] && name=$(basename "$table" .table)
        break
      done
      : "${name:=$(basename "$dir")}"
    fi
    upper=$(_stackhub_upper "$name")
    [ -n "$(eval "printf '%s' \"\${SETUP_$upper:-}\"")" ] && unsetup "$name"
    [ -d "$dir/bin" ] && _stackhub_path_add PATH "$dir/bin"
    [ -d "$dir/python" ] && _stackhub_path_add PYTHONPATH "$dir/python"
    [ -d "$dir/lib" ] && _stackhub_path_add LD_LIBRARY_PATH "$dir/lib"
    export "${upper}_DIR=$dir" "SETUP_$upper=$name LOCAL:$dir"
    return 0
  fi
  case ${name:-} in
    lsst_distrib)
      local site
      site=$(_stackhub_lsst_site)
      if [ -z "$site" ]; then echo "setup: lsst_distrib is not installed in $LSST_DISTRIB_PREFIX" >&2; return 1; fi
      _stackhub_path_add PATH "$LSST_DISTRIB_PREFIX/bin"
      _stackhub_path_add PYTHONPATH "$site"
      export LSST_DISTRIB_DIR=$LSST_DISTRIB_PREFIX
      export SETUP_LSST_DISTRIB="lsst_distrib ${STACKHUB_STACK_TAG:-current} -f Linux64 -Z $LSST_DISTRIB_PREFIX"
      ;;
    "") echo "usage: setup lsst_distrib | setup -r DIR [NAME]" >&2; return 2 ;;
    *) echo "setup: unknown product $name (known: lsst_distrib; use setup -r DIR for a checkout)" >&2; return 1 ;;
  esac
}

unsetup() {
  local name=${1:-} upper dir
  [ -n "$name" ] || { echo "usage: unsetup NAME" >&2; return 2; }
  if [ "$name" = lsst_distrib ]; then
    _stackhub_path_del PATH "$LSST_DISTRIB_PREFIX/bin"
    _stackhub_path_del PYTHONPATH "$(_stackhub_lsst_site)"
    unset LSST_DISTRIB_DIR SETUP_LSST_DISTRIB
    return 0
  fi
  upper=$(_stackhub_upper "$name")
  dir=$(eval "printf '%s' \"\${${upper}_DIR:-}\"")
  [ -n "$dir" ] || { echo "unsetup: $name is not set up" >&2; return 1; }
  _stackhub_path_del PATH "$dir/bin"
  _stackhub_path_del PYTHONPATH "$dir/python"
  _stackhub_path_del LD_LIBRARY_PATH "$dir/lib"
  unset "${upper}_DIR" "SETUP_$upper"
}

eups() {
  case "$*" in
    "list -s"|"list --setup")
      local line
      env | sed -n 's/^SETUP_[A-Z0-9_]*=//p' | sort | while read -r line; do
        set -- $line
        printf '%-24s %s\n' "$1" "${2:-} ${*:3}"
      done
      ;;
    *) echo "eups: only 'eups list -s' is available here (EUPS is replaced by a shim in this image)" >&2; return 1 ;;
  esac
}

# The Python of the stack first, whatever PATH the login scripts built.
_stackhub_path_add PATH "$LSST_STACK_DIR/bin"
_stackhub_path_add PATH "$LSST_STACK_DIR/env/bin"
export VIRTUAL_ENV=$LSST_STACK_DIR/env
