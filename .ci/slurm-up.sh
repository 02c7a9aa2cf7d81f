#!/usr/bin/env bash
# Start a one-node Slurm 22.05 cluster on this machine (root, no systemd): munge, slurmctld, slurmd.
# Used by .ci/run before the tests; safe to run again (it restarts the daemons).
set -euo pipefail
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sshd >/dev/null; then
  echo "ci: installing the missing system packages: slurm-wlm munge openssh-server"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge openssh-server >/dev/null
fi
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=t0ci
SlurmctldHost=localhost
AuthType=auth/munge
# A requeued job may start again only after its old credential expires (120 s by default); short here, so the
# requeue test does not wait two minutes. Sites keep the default.
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmUser=root
ReturnToService=2
NodeName=localhost CPUs=${CPUS} RealMemory=${MEM} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
pkill -x slurmd 2>/dev/null || true
pkill -x slurmctld 2>/dev/null || true
pkill -x munged 2>/dev/null || true
sleep 1
su -s /bin/sh munge -c "munged --force" 2>/dev/null || munged --force
slurmctld
slurmd -N localhost
# sshd with a key, for dagster-slurm's SSH submission. CI logs in as root: the fresh clone and its
# venv live under root's home, which another user could not read. A site uses its own user.
mkdir -p /run/sshd /root/.ssh
chmod 700 /root/.ssh
[ -f /root/.ssh/t0_ci ] || ssh-keygen -q -t ed25519 -N "" -f /root/.ssh/t0_ci
grep -qF "$(cat /root/.ssh/t0_ci.pub)" /root/.ssh/authorized_keys 2>/dev/null || cat /root/.ssh/t0_ci.pub >> /root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
ssh-keygen -A >/dev/null 2>&1
pgrep -x sshd >/dev/null || /usr/sbin/sshd -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no
ssh-keyscan -H localhost >> /root/.ssh/known_hosts 2>/dev/null || true

for _ in $(seq 1 30); do
  if sinfo -h -o "%T" 2>/dev/null | grep -qE "idle|mixed"; then
    echo "slurm: one-node cluster up ($(sinfo -h -o '%D node, %c CPUs, %T'))"
    exit 0
  fi
  scontrol update nodename=localhost state=resume 2>/dev/null || true
  sleep 1
done
echo "slurm: the cluster did not come up; see /var/log/slurm/*.log" >&2
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
