#!/usr/bin/env bash
# nginx's worker_processes from the CPUs this container may use.
#
#   scripts/cpu-count.sh     prints the count on stdout, the line saying
#                            why (and any warning) on stderr
#   . scripts/cpu-count.sh   (scripts/render-conf.sh) defines
#                            cpu_count_workers, below
#
# `worker_processes auto` counts the host's CPUs: on Render an instance of
# 0.5 to 8 CPUs runs on a host with many more, and would start a worker
# per host CPU, each with its own database pool.  The count here is the
# least of the limits that are visible, rounded up, at least 1:
#
#   cgroup v2   cpu.max ("QUOTA PERIOD"; "max PERIOD": no limit) of the
#               process's cgroup and its ancestors; cpuset.cpus.effective
#   cgroup v1   cpu.cfs_quota_us / cpu.cfs_period_us (-1: no limit) under
#               cpu/ or cpu,cpuacct/; cpuset.effective_cpus (or
#               cpuset.cpus) under cpuset/
#   nproc       the CPUs the process may run on (its affinity)
#   RENDER_CPU_COUNT
#               Render's statement of the instance type's CPUs ("0.5",
#               "2"): one more limit, used whatever the cgroup files say,
#               because a sandbox may not show them (and then nproc sees
#               the host); when both are visible the smaller wins
#
# and at most 64 (the module keeps per-worker gauges for 64 workers).
#
#   WORKER_PROCESSES  empty or "auto": the count above; a number 1-64:
#                     that number (anything else is refused)
#   CGROUP_ROOT       /sys/fs/cgroup (tests point it at fake trees)
#
# A file that does not parse is ignored, with a warning.


# cpu_count_workers: sets cpu_count (the number), cpu_count_why (the
# reason, for "worker_processes N (WHY)"), cpu_count_warnings (an array)
# and cpu_count_error (a refusal of WORKER_PROCESSES: false is returned).
cpu_count_workers() {
    local wp root proc line path n milli best best_why
    local -a parts=()

    cpu_count="" cpu_count_why="" cpu_count_error=""
    cpu_count_warnings=()

    wp=${WORKER_PROCESSES:-}
    wp=${wp//[[:space:]]/}
    if [ -n "$wp" ] && [ "$wp" != auto ]; then
        if [[ $wp =~ ^0*([1-9][0-9]?)$ ]] && (( 10#${BASH_REMATCH[1]} <= 64 )); then
            cpu_count=$((10#${BASH_REMATCH[1]}))
            cpu_count_why=WORKER_PROCESSES
            return 0
        fi
        cpu_count_error="WORKER_PROCESSES: must be a number of workers 1-64, or auto (the container's CPUs)"
        [[ $wp =~ ^[[:print:]]{1,40}$ ]] && cpu_count_error+=" (got \"$wp\")"
        return 1
    fi

    root=${CGROUP_ROOT:-/sys/fs/cgroup}
    root=${root%/}
    proc=/proc/self/cgroup
    best="" best_why=""

    # _cpu_limit MILLI TEXT: one more limit (in thousandths of a CPU)
    _cpu_limit() {
        parts+=("$2")
        if [ -z "$best" ] || (( $1 < best )); then
            best=$1
        fi
    }

    if [ -f "$root/cgroup.controllers" ]; then
        # v2: the process's own cgroup ("0::/path"), when this view of the
        # tree has it (no cgroup namespace), else the root of the view
        path=
        if [ -r "$proc" ]; then
            while IFS= read -r line; do
                [[ $line == 0::* ]] && path=${line#0::}
            done < "$proc"
        fi
        _cpu_v2 "$root" "$path"
    else
        path=
        if [ -r "$proc" ]; then
            while IFS= read -r line; do
                [[ $line =~ ^[0-9]+:([^:]*):(.*)$ ]] || continue
                [[ ,${BASH_REMATCH[1]}, == *,cpu,* ]] && path=${BASH_REMATCH[2]}
            done < "$proc"
        fi
        _cpu_v1 "$root" "$path"
    fi

    # the process's affinity
    if n=$(nproc 2>/dev/null) && [[ $n =~ ^[1-9][0-9]*$ ]]; then
        _cpu_limit $((n * 1000)) "nproc $n"
    fi

    if [ -n "${RENDER_CPU_COUNT:-}" ]; then
        if milli=$(_cpu_milli "$RENDER_CPU_COUNT"); then
            _cpu_limit "$milli" "RENDER_CPU_COUNT $RENDER_CPU_COUNT"
        else
            cpu_count_warnings+=("RENDER_CPU_COUNT \"${RENDER_CPU_COUNT:0:40}\" is not a number of CPUs, ignored")
        fi
    fi

    if [ -z "$best" ]; then
        cpu_count=1
        cpu_count_why="no CPU limit visible"
    else
        cpu_count=$(( (best + 999) / 1000 ))
        (( cpu_count >= 1 )) || cpu_count=1
        best_why=$(IFS=';'; printf '%s' "${parts[*]}")
        cpu_count_why="least of: ${best_why//;/; }"
        (( best % 1000 )) && cpu_count_why+=", rounded up"
    fi
    if (( cpu_count > 64 )); then
        cpu_count=64
        cpu_count_why+=", at most 64"
    fi
    return 0
}


# _cpu_dirs ROOT PATH: the directories from ROOT/PATH up to ROOT (PATH
# as /proc/self/cgroup names it), one a line; ROOT alone when ROOT/PATH
# is not in this view of the tree.
_cpu_dirs() {
    local root=$1 path=$2 d
    path=${path%/}
    if [ -n "$path" ] && [[ $path != *..* ]] && [ -d "$root$path" ]; then
        d=$path
        while [ -n "$d" ]; do
            printf '%s\n' "$root$d"
            d=${d%/*}
        done
    fi
    printf '%s\n' "$root"
}


# _cpu_milli VALUE: a decimal number of CPUs ("0.5", "2") in thousandths,
# rounded up; false when it is not one (or not above 0).
_cpu_milli() {
    local int frac up=0
    [[ $1 =~ ^([0-9]{1,6})(\.([0-9]{1,9}))?$|^\.([0-9]{1,9})$ ]] || return 1
    int=${BASH_REMATCH[1]:-0}
    frac=${BASH_REMATCH[3]}${BASH_REMATCH[4]}000
    [[ ${frac:3} =~ [1-9] ]] && up=1
    int=$(( 10#$int * 1000 + 10#${frac:0:3} + up ))
    (( int > 0 )) || return 1
    printf '%s' "$int"
}


# _cpu_quota LABEL QUOTA PERIOD FILE: a CFS quota as a limit
_cpu_quota() {
    local label=$1 quota=$2 period=$3 file=$4 milli whole
    if ! [[ $quota =~ ^[1-9][0-9]{0,14}$ && $period =~ ^[1-9][0-9]{0,14}$ ]]
    then
        quota="$quota $period"
        cpu_count_warnings+=("$label: cannot read \"${quota:0:40}\" in $file, ignored")
        return
    fi
    milli=$(( (quota * 1000 + period - 1) / period ))
    if (( quota % period == 0 )); then
        whole=$((quota / period))
    else
        whole=$((quota * 100 / period))
        whole=$((whole / 100)).$(printf '%02d' $((whole % 100)))
        whole=${whole%0}
    fi
    _cpu_limit "$milli" "$label $quota/$period = $whole CPUs"
}


# _cpu_set LABEL FILE: a cpuset list ("0-3,8") as a limit
_cpu_set() {
    local label=$1 file=$2 list item n=0 a b
    local -a items
    IFS= read -r list < "$file" 2>/dev/null || list=
    list=${list//[[:space:]]/}
    [ -n "$list" ] || return 0         # empty: not restricted here
    if ! [[ $list =~ ^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$ ]]; then
        cpu_count_warnings+=("$label: cannot read \"${list:0:40}\" in $file, ignored")
        return
    fi
    IFS=, read -r -a items <<< "$list"
    for item in "${items[@]}"; do
        a=${item%-*} b=${item#*-}
        if (( 10#$b < 10#$a || ${#a} > 6 || ${#b} > 6 )); then
            cpu_count_warnings+=("$label: cannot read \"${list:0:40}\" in $file, ignored")
            return
        fi
        n=$(( n + 10#$b - 10#$a + 1 ))
    done
    _cpu_limit $((n * 1000)) "$label $list = $n CPUs"
}


_cpu_v2() {
    local root=$1 path=$2 d quota period rest leaf=
    while IFS= read -r d; do
        [ -z "$leaf" ] && leaf=$d
        [ -r "$d/cpu.max" ] || continue
        read -r quota period rest < "$d/cpu.max" || true
        if [ "$quota" = max ] && [[ $period =~ ^[0-9]+$ ]] && [ -z "$rest" ]; then
            continue
        fi
        _cpu_quota "cgroup v2 cpu.max" "$quota" "$period${rest:+ $rest}" \
                   "$d/cpu.max"
    done < <(_cpu_dirs "$root" "$path")
    while IFS= read -r d; do
        if [ -r "$d/cpuset.cpus.effective" ]; then
            _cpu_set "cpuset" "$d/cpuset.cpus.effective"
            break
        fi
    done < <(_cpu_dirs "$root" "$path")
}


_cpu_v1() {
    local root=$1 path=$2 dir d quota period set
    for dir in "$root/cpu" "$root/cpu,cpuacct" "$root/cpuacct,cpu" ""; do
        [ -n "$dir" ] && [ -d "$dir" ] && break
    done
    if [ -n "$dir" ]; then
        while IFS= read -r d; do
            [ -r "$d/cpu.cfs_quota_us" ] || continue
            IFS= read -r quota < "$d/cpu.cfs_quota_us" || true
            IFS= read -r period < "$d/cpu.cfs_period_us" 2>/dev/null || period=
            quota=${quota//[[:space:]]/} period=${period//[[:space:]]/}
            [ "$quota" = -1 ] && continue
            _cpu_quota "cgroup v1 cpu.cfs_quota_us/cfs_period_us" \
                       "$quota" "$period" "$d"
        done < <(_cpu_dirs "$dir" "$path")
    fi
    if [ -d "$root/cpuset" ]; then
        # the cpuset hierarchy's own path is not looked up: in a
        # container its root is the container's
        for set in cpuset.effective_cpus cpuset.cpus; do
            if [ -r "$root/cpuset/$set" ]; then
                _cpu_set "cpuset" "$root/cpuset/$set"
                break
            fi
        done
    fi
}


if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    if ! cpu_count_workers; then
        printf 'cpu-count: %s\n' "$cpu_count_error" >&2
        exit 1
    fi
    for w in "${cpu_count_warnings[@]}"; do
        printf 'cpu-count: warning: %s\n' "$w" >&2
    done
    printf 'cpu-count: worker_processes %s (%s)\n' "$cpu_count" "$cpu_count_why" >&2
    printf '%s\n' "$cpu_count"
fi
