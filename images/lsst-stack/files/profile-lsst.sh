# Every login shell (and so every JupyterLab terminal) starts with lsst_distrib set up.
if [ -n "${BASH_VERSION:-}" ] && [ -f /opt/lsst/software/stack/loadLSST.bash ]; then
  . /opt/lsst/software/stack/loadLSST.bash
  setup lsst_distrib
fi
