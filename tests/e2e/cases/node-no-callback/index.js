exports.handler = function (event, context) { setTimeout(() => {}, 10); };
