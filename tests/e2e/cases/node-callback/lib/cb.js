let fired = false;
exports.handler = function (event, context, callback) {
  setTimeout(() => { fired = true; }, 20);
  // The response waits for the event loop to empty (callbackWaitsForEmptyEventLoop).
  callback(null, { got: event, get afterTimer() { return fired; } });
};
