-- What placement predicted for a `device: auto` attempt, in microseconds, beside what it took:
-- on the CPU, and on the GPU with copies in and out (NULL where it could not run there).
ALTER TABLE task_attempts ADD COLUMN predicted_cpu_us BIGINT;
ALTER TABLE task_attempts ADD COLUMN predicted_gpu_us BIGINT;
