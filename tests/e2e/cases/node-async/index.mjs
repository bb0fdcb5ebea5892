export const handler = async (event, context) => ({
  doubled: event.n * 2,
  memoryLimitInMB: context.memoryLimitInMB,
  functionName: context.functionName,
  remainingOk: context.getRemainingTimeInMillis() > 0,
});
