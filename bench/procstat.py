"""Memory and CPU of a server's process tree, read from /proc (Linux only).

A server may be one process (most peers) or a parent with pre-forked
children (smtpd_lite --workers N), so every figure is summed over the tree
rooted at the PID the harness started.
"""

import os

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid):
    """/proc/PID/stat from field 3 (state) on, or None if the process is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as stat_file:
            stat = stat_file.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split
    # after the last ')'.
    return stat[stat.rindex(b")") + 2:].split()


def _children_map():
    """Map each live PID to the PIDs whose parent it is."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def process_tree(root_pid):
    """The root PID and all its live descendants."""
    children = _children_map()
    tree, pending = [], [root_pid]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, ()))
    return tree


def _status_kib(pid, key):
    try:
        with open("/proc/%d/status" % pid) as status_file:
            for line in status_file:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_bytes(root_pid):
    """Resident set size now (VmRSS), summed over the tree."""
    return 1024 * sum(_status_kib(pid, "VmRSS:") for pid in process_tree(root_pid))


def peak_rss_bytes(root_pid):
    """High-water resident set size (VmHWM), summed over the tree."""
    return 1024 * sum(_status_kib(pid, "VmHWM:") for pid in process_tree(root_pid))


def reset_peak_rss(root_pid):
    """Make VmHWM start again from the current VmRSS.

    Writing "5" to clear_refs resets the peak RSS counter (Linux 4.0+).
    Returns False when that is not allowed, in which case VmHWM also
    covers the server's start-up.
    """
    done = True
    for pid in process_tree(root_pid):
        try:
            with open("/proc/%d/clear_refs" % pid, "w") as clear_refs:
                clear_refs.write("5")
        except OSError:
            done = False
    return done


def cpu_seconds(root_pid):
    """User plus system CPU time used so far, summed over the tree.

    Reaped children count through the parent's cutime/cstime, so a worker
    that died and was replaced still counts.
    """
    total_ticks = 0
    for pid in process_tree(root_pid):
        fields = _stat_fields(pid)
        if fields is None:
            continue
        # Fields 14-17 of stat(5) (utime, stime, cutime, cstime) sit at
        # positions 11-14 once pid and comm are dropped.
        total_ticks += sum(int(value) for value in fields[11:15])
    return total_ticks / CLOCK_TICKS
