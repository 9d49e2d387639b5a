-- What an attempt ran after templating (the query, the command with secrets masked, the
-- settings of other kinds) and, for a query, the physical plan it ran (with the GPU kernel
-- plan when it ran there): the task page and `amdahl tasks show` print them.
ALTER TABLE task_attempts ADD COLUMN rendered TEXT;
ALTER TABLE task_attempts ADD COLUMN plan TEXT;
