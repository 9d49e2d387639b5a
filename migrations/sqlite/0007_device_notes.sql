-- Why an attempt ran on the device it ran on, when that is not what the task asked for
-- (`device: gpu` with no usable GPU, a plan the GPU cannot run, a GPU failure rerun on the CPU).
ALTER TABLE task_attempts ADD COLUMN device_note TEXT;
