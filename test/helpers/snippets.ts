/** Python that prints the container's own memory cap in MiB, on cgroup v2 or v1. */
export const READ_MEMORY_CAP = [
  'import os',
  'for p in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):',
  '    if os.path.exists(p):',
  '        print(int(open(p).read().strip()) // 2**20)',
  '        break',
].join('\n');
