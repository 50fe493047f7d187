/* What two write calls per WAL frame cost against one write per commit, on the disk under
 * /tmp: SQLite writes each frame of a commit as a 24-byte header and a 4,096-byte page, two
 * pwrite calls; a layer that gathered a commit's frames could write them with one. Writes
 * 2,000 commits of FRAMES frames each way into a file reused like a WAL, nothing synced.
 *
 * usage: cc -O2 -o /tmp/wal_writes bench/wal_writes.c && /tmp/wal_writes [FRAMES]   (default 130)
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { HEADER = 24, PAGE = 4096, COMMITS = 2000, REUSED_COMMITS = 30 };

static double seconds_now(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec + now.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  int frames = argc > 1 ? atoi(argv[1]) : 130;
  size_t frame = HEADER + PAGE;
  char header[HEADER], page[PAGE];
  char *gathered = malloc(frames * frame);
  memset(header, 1, sizeof header);
  memset(page, 2, sizeof page);
  for (int gather = 0; gather < 2; gather++) {
    int fd = open("/tmp/wal_writes.tmp", O_RDWR | O_CREAT | O_TRUNC, 0644);
    double started = seconds_now();
    for (int commit = 0; commit < COMMITS; commit++) {
      off_t offset = 32 + (off_t)(commit % REUSED_COMMITS) * frames * frame;
      for (int f = 0; f < frames; f++, offset += frame) {
        if (gather) {
          memcpy(gathered + f * frame, header, HEADER);
          memcpy(gathered + f * frame + HEADER, page, PAGE);
        } else if (pwrite(fd, header, HEADER, offset) < 0 || pwrite(fd, page, PAGE, offset + HEADER) < 0) {
          perror("pwrite");
          return 1;
        }
      }
      if (gather && pwrite(fd, gathered, frames * frame, offset - frames * frame) < 0) {
        perror("pwrite");
        return 1;
      }
    }
    double per_commit = (seconds_now() - started) / COMMITS;
    printf("%s: %.1f µs per commit of %d frames, %.2f µs per frame\n",
           gather ? "gathered, one pwrite per commit" : "two pwrites per frame", per_commit * 1e6,
           frames, per_commit / frames * 1e6);
    close(fd);
  }
  unlink("/tmp/wal_writes.tmp");
  return 0;
}
