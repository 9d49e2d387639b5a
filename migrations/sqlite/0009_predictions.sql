-- What placement predicted for a `device: auto` attempt, beside what it took: microseconds on
-- the CPU and on the GPU with copies in and out (NULL where it could not run there), the
-- stage's main kind of work, and the learned factors included in each prediction (the model's
-- own prediction is the predicted time divided by its factor; learning uses that).
ALTER TABLE task_attempts ADD COLUMN predicted_cpu_us INTEGER;
ALTER TABLE task_attempts ADD COLUMN predicted_gpu_us INTEGER;
ALTER TABLE task_attempts ADD COLUMN predicted_kind TEXT;
ALTER TABLE task_attempts ADD COLUMN cpu_factor REAL;
ALTER TABLE task_attempts ADD COLUMN gpu_factor REAL;
-- Where an attempt's time went (µs): reading and writing data, copies between host and device,
-- and compute; the rest of its duration is overhead (planning, scheduling inside the worker).
ALTER TABLE task_attempts ADD COLUMN io_us INTEGER;
ALTER TABLE task_attempts ADD COLUMN transfer_us INTEGER;
ALTER TABLE task_attempts ADD COLUMN compute_us INTEGER;
