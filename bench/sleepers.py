"""Many-tasks benchmark, python peer: N asyncio coroutines each sleeping S seconds, gathered.

usage: python3 sleepers.py [N=10000] [S=0.2]; prints "ok N", exits 1 on a wrong result.
"""
import asyncio
import sys


async def sleeper(i, seconds):
    await asyncio.sleep(seconds)
    return i


async def main(n, seconds):
    # gather wraps each coroutine in a Task, the asyncio counterpart of task.spawn.
    return await asyncio.gather(*(sleeper(i, seconds) for i in range(1, n + 1)))


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 0.2
    results = asyncio.run(main(n, seconds))
    if len(results) != n or sum(results) != n * (n + 1) // 2:
        print(f"sleepers.py: {len(results)} results, checksum {sum(results)}", file=sys.stderr)
        sys.exit(1)
    print(f"ok {n}")
