import winston from 'winston';

export type Logger = winston.Logger;

/** JSON lines on stdout (or stderr, for a process whose stdout is a protocol, like MCP stdio). */
export function createLogger(level: string, stream: 'stdout' | 'stderr' = 'stdout'): Logger {
  return winston.createLogger({
    level,
    format: winston.format.combine(winston.format.timestamp(), winston.format.json()),
    defaultMeta: { service: 'run-python-code' },
    transports: [
      new winston.transports.Console({
        stderrLevels: stream === 'stderr' ? ['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly'] : ['error'],
      }),
    ],
  });
}
