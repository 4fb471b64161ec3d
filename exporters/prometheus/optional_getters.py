"""The getters of the optional metric kinds (sched, hugetlb, cpuset, memory_numa, tcp, udp, advtcp,
referenced_memory, resctrl) for the container families' table (``table``).

Each getter returns nothing unless its part was read (kind on, file there), so a kind that is off or that the host
cannot feed has no series. A getter returns ``(extra_labels, value)`` pairs as the table's getters do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.model import ContainerInfo, ContainerStats

if TYPE_CHECKING:
    from exporters.prometheus.table import Getter, Samples


def sched(attr: str, divisor: float | None = None) -> Getter:
    def get(info: ContainerInfo, s: ContainerStats) -> Samples:
        sched = s.sched
        if sched is None:
            return ()
        v = getattr(sched, attr)
        return (("", v / divisor if divisor else v),)
    return get


def hugetlb(attr: str) -> Getter:
    def get(info: ContainerInfo, s: ContainerStats) -> Samples:
        pages = s.hugetlb
        if not pages:
            return ()
        return [(f',pagesize="{size}"', v) for size, h in pages.items() if (v := getattr(h, attr)) is not None]
    return get


def migrate(info: ContainerInfo, s: ContainerStats) -> Samples:
    return () if s.memory_migrate is None else (("", s.memory_migrate),)


def numa(info: ContainerInfo, s: ContainerStats) -> Samples:
    numa = s.numa
    if numa is None:
        return ()
    out: list[tuple[str, int | float]] = []
    for scope, table in (("container", numa.container), ("hierarchy", numa.hierarchy)):
        for kind in ("file", "anon", "unevictable"):
            nodes = (table or {}).get(kind)
            if nodes:
                out.extend((f',type="{kind}",scope="{scope}",node="{node}"', pages)
                           for node, pages in sorted(nodes.items()))
    return out


def tcp(attr: str) -> Getter:
    def get(info: ContainerInfo, s: ContainerStats) -> Samples:
        table = getattr(s, attr)
        return () if table is None else [(f',tcp_state="{state}"', n) for state, n in table.items()]
    return get


_UDP_STATES = (("listen", "listen"), ("dropped", "dropped"), ("rxqueued", "rx_queued"), ("txqueued", "tx_queued"))


def udp(attr: str) -> Getter:
    def get(info: ContainerInfo, s: ContainerStats) -> Samples:
        udp = getattr(s, attr)
        return () if udp is None else [(f',udp_state="{state}"', getattr(udp, field)) for state, field in _UDP_STATES]
    return get


# cAdvisor's TcpAdvancedStat fields in its order; the label is the lower-cased kernel name (net/snmp "Tcp:" and
# net/netstat "TcpExt:"). A counter this kernel does not print has no series (cAdvisor serves it as 0).
_ADVANCED_TCP_NAMES = (
    "RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs "
    "RetransSegs InErrs OutRsts InCsumErrors EmbryonicRsts SyncookiesSent SyncookiesRecv SyncookiesFailed "
    "PruneCalled RcvPruned OfoPruned OutOfWindowIcmps LockDroppedIcmps TW TWRecycled TWKilled TCPTimeWaitOverflow "
    "TCPTimeouts TCPSpuriousRTOs TCPLossProbes TCPLossProbeRecovery TCPRenoRecoveryFail TCPSackRecoveryFail "
    "TCPRenoFailures TCPSackFailures TCPLossFailures DelayedACKs DelayedACKLocked DelayedACKLost ListenOverflows "
    "ListenDrops TCPHPHits TCPPureAcks TCPHPAcks TCPRenoRecovery TCPSackRecovery TCPSACKReneging TCPFACKReorder "
    "TCPSACKReorder TCPRenoReorder TCPTSReorder TCPFullUndo TCPPartialUndo TCPDSACKUndo TCPLossUndo TCPFastRetrans "
    "TCPSlowStartRetrans TCPLostRetransmit TCPRetransFail TCPRcvCollapsed TCPDSACKOldSent TCPDSACKOfoSent "
    "TCPDSACKRecv TCPDSACKOfoRecv TCPAbortOnData TCPAbortOnClose TCPAbortOnMemory TCPAbortOnTimeout "
    "TCPAbortOnLinger TCPAbortFailed TCPMemoryPressures TCPMemoryPressuresChrono TCPSACKDiscard TCPDSACKIgnoredOld "
    "TCPDSACKIgnoredNoUndo TCPMD5NotFound TCPMD5Unexpected TCPMD5Failure TCPSackShifted TCPSackMerged "
    "TCPSackShiftFallback TCPBacklogDrop PFMemallocDrop TCPMinTTLDrop TCPDeferAcceptDrop IPReversePathFilter "
    "TCPReqQFullDoCookies TCPReqQFullDrop TCPFastOpenActive TCPFastOpenActiveFail TCPFastOpenPassive "
    "TCPFastOpenPassiveFail TCPFastOpenListenOverflow TCPFastOpenCookieReqd TCPSynRetrans TCPOrigDataSent "
    "PAWSActive PAWSEstab"
)
ADVANCED_TCP = tuple(name.lower() for name in _ADVANCED_TCP_NAMES.split())


def advtcp(info: ContainerInfo, s: ContainerStats) -> Samples:
    counters = s.tcp_advanced
    if counters is None:
        return ()
    return [(f',tcp_state="{name}"', counters[name]) for name in ADVANCED_TCP if name in counters]


def referenced(info: ContainerInfo, s: ContainerStats) -> Samples:
    return () if s.referenced_bytes is None else (("", s.referenced_bytes),)


def resctrl(part: str, index: int | None = None) -> Getter:
    def get(info: ContainerInfo, s: ContainerStats) -> Samples:
        r = s.resctrl
        if r is None:
            return ()
        values = getattr(r, part)
        return [(f',node_id="{i}"', v if index is None else v[index]) for i, v in enumerate(values)]
    return get
