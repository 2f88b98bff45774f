"""The audit log on the Diagnose page: each browser session sees and exports only its own
analyses; the full log only with the administrator password, and only where one is configured.

A session is tagged with a random ID kept in st.session_state (never the IP address): a new
browser tab, or a reload, is a new session. The administrator password comes from Streamlit
secrets (`admin_password` in .streamlit/secrets.toml) or the DERMO_ADMIN_PASSWORD environment
variable; without either, the full log is not available on the page at all.
"""
from __future__ import annotations

import math
import os
import secrets

import pandas as pd
import streamlit as st

from core.clinic import audit

SESSION_KEY = "audit_session_id"
FULL_LOG_ROWS = 200  # shown on the page; the export holds every row


def session_id() -> str:
    """This browser session's random ID (128 bits), created on first use."""
    if SESSION_KEY not in st.session_state:
        st.session_state[SESSION_KEY] = secrets.token_hex(16)
    return st.session_state[SESSION_KEY]


def admin_password() -> str | None:
    """The configured administrator password, or None: secrets first, then the environment."""
    try:
        configured = st.secrets.get("admin_password")
    except FileNotFoundError:  # no secrets.toml anywhere: not an error
        configured = None
    return str(configured) if configured else (os.environ.get(audit.ADMIN_ENV) or None)


def not_logged(case_name: str, reason: str) -> None:
    """The warning shown when an analysis could not be written to the audit log."""
    st.warning(f"**Not logged.** Case {case_name} is shown, but it was **not** written to the audit log: {reason}. "
               "Note the case ID in the patient's record and tell your IT administrator.", icon="⚠️")


def _csv(frame: pd.DataFrame) -> bytes:
    return audit.overview(frame).to_csv(index=False).encode()


def own_log() -> None:
    """This session's analyses: table and CSV export."""
    try:
        mine = audit.read(session_id=session_id())
    except audit.AuditError as exc:
        st.warning(f"The audit log cannot be shown: {exc}.")
        return
    with st.expander(f"Audit log: your analyses in this session ({len(mine)})"):
        st.caption("Time, case ID, suggested class, risks and flags, then the image's sha256 (never the image), "
                   "metadata, outputs and model. Only the analyses of this browser session are shown: other users' "
                   "patients are not, and a reload starts a new session.")
        st.dataframe(audit.overview(mine), hide_index=True, key="diagnose_audit_table")
        st.download_button("Export your analyses (CSV)", _csv(mine), file_name="audit_log_session.csv",
                           mime="text/csv", key="diagnose_audit_csv", on_click="ignore")


@st.cache_resource
def _attempt_limit() -> audit.AttemptLimit:
    """One limit on wrong administrator passwords for the whole server."""
    return audit.AttemptLimit()


def full_log() -> None:
    """Every session's analyses, behind the administrator password."""
    configured = admin_password()
    with st.expander("Administrator: the full audit log"):
        if configured is None:
            st.caption("Not available: no administrator password is configured on this server "
                       f"(Streamlit secrets `admin_password` or the environment variable {audit.ADMIN_ENV}).")
            return
        entered = st.text_input("Administrator password", type="password", key="diagnose_admin_password")
        if not entered:
            return
        limit = _attempt_limit()
        if wait := limit.wait_s():
            st.error(f"Too many wrong passwords on this server: try again in {math.ceil(wait)} seconds.")
            return
        if not audit.admin_allowed(entered, configured):
            limit.failed()
            st.error("That is not the administrator password.")
            return
        try:
            total, newest = audit.count(), audit.read(limit=FULL_LOG_ROWS)
        except audit.AuditError as exc:
            st.warning(f"The audit log cannot be shown: {exc}.")
            return
        st.caption(f"{total} records in {audit.db_path()}; the newest {min(total, FULL_LOG_ROWS)} are shown, the "
                   "export holds them all. `session_id` groups the analyses of one browser session.")
        st.dataframe(audit.overview(newest), hide_index=True, key="diagnose_audit_full_table")
        st.download_button("Export the full audit log (CSV)", lambda: _csv(audit.read()), file_name="audit_log.csv",
                           mime="text/csv", key="diagnose_audit_full_csv", on_click="ignore")
