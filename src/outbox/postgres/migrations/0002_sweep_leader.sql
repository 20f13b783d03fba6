-- notifyd queue schema on PostgreSQL, version 2: one daemon at a time runs the periodic sweep.
--
-- Expiry, orphan dead-lettering and retention are safe on several daemons at once (every batch
-- locks its rows with SKIP LOCKED), but N daemons doing them N times over is load for nothing.
-- The daemon named here leads a task until `until` (Unix ms) and extends that at each run; when
-- it dies, another takes the task over once `until` has passed.
CREATE TABLE leaders (
    task   text   NOT NULL PRIMARY KEY,
    owner  text   NOT NULL,
    until  bigint NOT NULL
);
