-- Each machine's measured profile (`amdahl calibrate`), as JSON, for the placement cost model.
CREATE TABLE machine_profiles (
    host TEXT PRIMARY KEY,
    profile TEXT NOT NULL,
    measured_at_ms INTEGER NOT NULL
);
