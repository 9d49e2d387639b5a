-- Where an attempt was sent (its route: `cpu`, `gpu`, `cluster`, `split into N parts over …`),
-- decided once before it ran; `device` stays where it ran (a GPU route that fell back ran on
-- the CPU). NULL for attempts recorded before this column, or ended before they were routed.
ALTER TABLE task_attempts ADD COLUMN route TEXT;
